"""WebSocket authentication: puts `scope["user"]` and `scope["access"]` (an Access, or None) on every socket.

The session cookie (console) resolves to the person's current org like the API does; the orgs app extends this
with API keys. Consumers check `scope["access"]` and nothing else.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware


class _SessionRequest:
    """The two attributes `session_access` reads, taken from the websocket scope."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.session = scope.get("session") or {}
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
        self.headers = {"X-Hermes-Org": headers.get("x-hermes-org")} if headers.get("x-hermes-org") else {}


class AccessMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope["access"] = await self._resolve(scope)
        return await super().__call__(scope, receive, send)

    @database_sync_to_async
    def _resolve(self, scope: dict[str, Any]) -> Any:
        from apps.orgs.selectors import session_access

        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        return session_access(_SessionRequest(scope), user)


def WebSocketAuthMiddleware(inner: Any) -> Any:
    return AuthMiddlewareStack(AccessMiddleware(inner))
