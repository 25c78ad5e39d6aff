"""Turn an import-time or configuration failure into an explanation instead of a bare exit code 1."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

HINTS: tuple[tuple[str, str], ...] = (
    ("No module named", "a dependency is missing: run `make install` (or pip install -r requirements.txt)"),
    ("could not connect", "the database is unreachable: check DATABASE_URL and that Postgres runs"),
    ("Connection refused", "a service is unreachable: check DATABASE_URL / REDIS_URL"),
    ("AppRegistryNotReady", "code imports models at module level before Django is set up"),
    ("ImproperlyConfigured", "a setting is wrong: run `python manage.py doctor`"),
)


def explain(process: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    hint = next((fix for needle, fix in HINTS if needle in text), "see the traceback above")
    return f"hermes {process}: failed to start: {text}\nhermes {process}: how to fix: {hint}"


@contextmanager
def explain_failures(process: str) -> Iterator[None]:
    try:
        yield
    except SystemExit:
        raise  # configuration errors already printed their one-line explanations
    except BaseException as exc:
        traceback.print_exc()
        print(explain(process, exc), file=sys.stderr)
        raise SystemExit(1) from exc
