"""WebSocket authentication: the session cookie (console); API keys are added by the orgs app."""

from typing import Any

from channels.auth import AuthMiddlewareStack


def WebSocketAuthMiddleware(inner: Any) -> Any:
    return AuthMiddlewareStack(inner)
