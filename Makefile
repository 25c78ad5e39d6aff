# `make run` and `make test` do all set-up on a fresh machine (Python 3.11+ and make).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck migrations-check bench e2e doctor docs clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# make runs this command itself, no shell around it: hermes_site.run, seeing MAKELEVEL, stops when its parent
# dies (a `kill -9` on make). Keep it one plain command (a pipe or `;` would put a shell in between).
run: install
	$(PY) -m hermes_site.run

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy apps hermes_site

migrations-check: install
	HERMES_ENV=test $(PY) manage.py makemigrations --check --dry-run

test: lint typecheck migrations-check
	$(PY) -m hermes_site.testrun --cov --cov-report=term $(PYTEST_ARGS)

e2e: install
	$(PY) -m hermes_site.testrun -m e2e tests/e2e $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)

doctor: install
	$(PY) manage.py doctor

docs: install
	$(PY) -m hermes_site.config --markdown > docs/configuration.md
	$(PY) -m hermes_site.config --env-example > .env.example
	$(PY) -m apps.core.permissions > docs/permissions.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage
