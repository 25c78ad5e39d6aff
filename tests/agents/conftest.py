from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.servers import QuietHandler


class CardServer:
    """A loopback HTTP server answering GETs from a path -> (status, body) table the test fills in."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.reply(*routes.get(self.path, (404, b"not found")))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def serve(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = (status, body if isinstance(body, bytes) else json.dumps(body).encode())


@pytest.fixture
def card_server(settings: Any) -> Iterator[CardServer]:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    server = CardServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def v1_card(base: str, **overrides: Any) -> dict[str, Any]:
    card = {
        "name": "Weather Bot",
        "description": "Forecasts",
        "version": "2.1.0",
        "supportedInterfaces": [{"url": f"{base}/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": True, "pushNotifications": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "forecast", "name": "Forecast", "description": "Weather forecast", "tags": ["weather"]}],
    }
    card.update(overrides)
    return card


def v03_card(base: str) -> dict[str, Any]:
    return {
        "name": "Legacy Bot",
        "description": "Speaks A2A 0.3",
        "version": "0.9",
        "url": f"{base}/legacy",
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": {"streaming": False},
        "defaultInputModes": ["text"],
        "defaultOutputModes": ["text"],
        "skills": [{"id": "old", "name": "Old skill", "description": "d", "tags": []}],
    }


@pytest.fixture(scope="module")
def sdk_agent_server() -> Iterator[Any]:
    """The third-party a2a-sdk agent (tests/agents/sdk_agent.py) over loopback HTTP: `.base`, `.calls`."""
    from tests.agents.sdk_agent import build_app
    from tests.servers import DeferredApp, serve_asgi

    holder = DeferredApp()
    with serve_asgi(holder) as base:
        holder.app = build_app(base)
        holder.app.base = base
        yield holder.app


@pytest.fixture
def sdk_agent_base(sdk_agent_server: Any) -> str:
    sdk_agent_server.calls.clear()
    return str(sdk_agent_server.base)


@pytest.fixture
def allow_loopback(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
