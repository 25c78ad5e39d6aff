"""A websocket test client for an ASGI app, in-process.

channels.testing.WebsocketCommunicator does the same, but importing channels.testing needs daphne (its live-server
module), which Hermes does not use; this is the part of it these tests need.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlparse

from asgiref.testing import ApplicationCommunicator


class WebsocketCommunicator(ApplicationCommunicator):  # type: ignore[misc]
    def __init__(self, application: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        parsed = urlparse(path)
        scope = {
            "type": "websocket",
            "path": unquote(parsed.path),
            "raw_path": parsed.path.encode(),
            "query_string": parsed.query.encode(),
            "headers": headers or [],
            "subprotocols": [],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 5) -> tuple[bool, int | None]:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        # Hermes accepts and then closes with a reason code (4401/4403/4404) when it refuses a socket.
        if await self.receive_nothing(timeout=0.05):
            return True, None
        closing = await self.receive_output(timeout)
        if closing["type"] == "websocket.close":
            return False, closing.get("code", 1000)
        self.pending = closing
        return True, None

    pending: dict[str, Any] | None = None

    async def receive_json_from(self, timeout: float = 5) -> Any:
        response, self.pending = self.pending or await self.receive_output(timeout), None
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def disconnect(self, code: int = 1000, timeout: float = 5) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
