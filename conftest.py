import os

# Tests run with HERMES_ENV=test unless the caller says otherwise (hermes_site.testrun sets it too).
os.environ.setdefault("HERMES_ENV", "test")

# Fixtures that serve the Hermes ASGI app (and its demo agents) over real HTTP: tests/hermes_server.py.
pytest_plugins = ["tests.hermes_server"]
