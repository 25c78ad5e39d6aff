# The shared fixtures of tests/conftest.py (org, alice, bob, dave, mia, charlie, api, ...) for the tests under
# apps/*/tests too. A star import rather than `pytest_plugins`: that would register tests/conftest.py twice.
from tests.conftest import *  # noqa: F403

# Fixtures that serve the Hermes ASGI app (and its demo agents) over real HTTP: tests/hermes_server.py.
pytest_plugins = ["tests.hermes_server"]
