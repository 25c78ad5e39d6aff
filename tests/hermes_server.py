"""pytest plugin: the whole Hermes ASGI app (HTTP, WebSockets, demo agents) served by uvicorn on loopback.

    def test_x(demo_agents):                        # function scope; the server itself is session-scoped
        demo_agents.base                            # http://127.0.0.1:<port>
        demo_agents.url("echo")                     # http://127.0.0.1:<port>/demo-agents/echo/

`demo_agents` points HERMES_PUBLIC_URL at the server (so the demo cards name it) and allowlists 127.0.0.1 for the
SSRF guard, for the duration of the test. Requests to Django through this server run in its threads, so tests that
need them to see rows must use `transactional_db`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers import serve_asgi


@dataclass(frozen=True)
class LiveHermes:
    base: str

    def url(self, slug: str) -> str:
        return f"{self.base}/demo-agents/{slug}/"

    def card_url(self, slug: str) -> str:
        return f"{self.url(slug)}.well-known/agent-card.json"


@pytest.fixture(scope="session")
def hermes_server() -> Iterator[str]:
    before = os.environ.get("DATABASE_POOL")
    import hermes_site.asgi

    # The ASGI entry point turns the pool on for real servers; settings are already loaded here, and the flag
    # must not leak into processes the tests start (workers inherit the environment).
    if before is None:
        os.environ.pop("DATABASE_POOL", None)
    with serve_asgi(hermes_site.asgi.application) as base:
        yield base


@pytest.fixture
def demo_agents(hermes_server: str, settings: Any) -> LiveHermes:
    settings.HERMES_PUBLIC_URL = hermes_server
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    return LiveHermes(base=hermes_server)
