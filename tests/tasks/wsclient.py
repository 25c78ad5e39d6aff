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
            self.close_reason = response.get("reason", "")
            return False, response.get("code", 1000)
        # Hermes accepts and then closes with a code (4401/4403/4404) and a reason when it refuses a socket.
        if await self.receive_nothing(timeout=0.05):
            return True, None
        closing = await self.receive_output(timeout)
        if closing["type"] == "websocket.close":
            self.close_reason = closing.get("reason", "")
            return False, closing.get("code", 1000)
        self.pending = closing
        return True, None

    async def closed(self, timeout: float = 5) -> tuple[int, str]:
        """Skip what the socket sends until the server closes it: (code, reason)."""
        message, self.pending = self.pending or await self.receive_output(timeout), None
        while message["type"] != "websocket.close":
            assert message["type"] == "websocket.send", message
            message = await self.receive_output(timeout)
        return message.get("code", 1000), message.get("reason", "")

    pending: dict[str, Any] | None = None
    close_reason: str | None = None  # of a socket refused by `connect`

    async def receive_json_from(self, timeout: float = 5) -> Any:
        response, self.pending = self.pending or await self.receive_output(timeout), None
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def disconnect(self, code: int = 1000, timeout: float = 5) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
