"""WebSocket authentication: puts `scope["user"]` and `scope["access"]` (an Access, or None) on every socket.

Two ways in, like the API:
- an API key: `Authorization: Bearer hrm_…` header, or `?api_key=hrm_…` in the query string (browsers cannot set
  headers on a WebSocket). A bad key leaves the socket anonymous and puts the reason in `scope["auth_error"]`
  (e.g. `key_revoked`) so the consumer can close with an explanation.
- the session cookie (console), resolved to the person's current org like the API does.
Consumers check `scope["access"]` and nothing else.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.conf import settings
from django.db import InterfaceError, OperationalError

from apps.core import checks, context

logger = logging.getLogger(__name__)


class _SessionRequest:
    """The two attributes `session_access` reads, taken from the websocket scope."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.session = scope.get("session") or {}
        headers = _headers(scope)
        self.headers = {"X-Hermes-Org": headers.get("x-hermes-org")} if headers.get("x-hermes-org") else {}


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}


def api_key_from_scope(scope: dict[str, Any]) -> str | None:
    authorization = _headers(scope).get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith("hrm_"):
        return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    values = query.get("api_key")
    return values[0] if values else None


class AccessMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        await self._resolve(scope)
        # The consumer runs inside this call: every line it logs (and every job it enqueues) carries the
        # socket's request_id, org_id and user_id.
        context.bind_scope(scope)
        return await super().__call__(scope, receive, send)

    @database_sync_to_async
    def _resolve(self, scope: dict[str, Any]) -> None:
        from django.contrib.auth.models import AnonymousUser

        from apps.orgs.auth import APIKeyError, client_ip_from_scope, resolve_api_key
        from apps.orgs.selectors import session_access

        scope["access"] = None
        token = api_key_from_scope(scope)
        if token is not None:
            try:
                scope["user"], scope["access"] = resolve_api_key(token, client_ip_from_scope(scope))
            except APIKeyError as error:
                scope["user"], scope["auth_error"] = AnonymousUser(), error.error_code
            return
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return
        scope["access"] = session_access(_SessionRequest(scope), user)
        if scope["access"] is None:
            scope["auth_error"] = "no_organization"  # signed in, but in no org (the HTTP twin's 403 code)


def WebSocketAuthMiddleware(inner: Any) -> Any:
    return DatabaseUnavailableGuard(AuthMiddlewareStack(AccessMiddleware(inner)))


CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455: "try again later"


class DatabaseUnavailableGuard:
    """A socket that cannot be served because the database is unreachable (reading the session or key, the task,
    its timeline) closes with 1013 and one warning line — the websocket twin of HTTP's 503
    `database_unavailable` — instead of failing the handshake with a traceback on every reconnect attempt."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        state = {"connect_received": False, "accepted": False, "closed": False}

        async def tracked_receive() -> Any:
            message = await receive()
            state["connect_received"] = state["connect_received"] or message["type"] == "websocket.connect"
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            state["accepted"] = state["accepted"] or message["type"] == "websocket.accept"
            state["closed"] = state["closed"] or message["type"] == "websocket.close"
            await send(message)

        try:
            return await self.inner(scope, tracked_receive, tracked_send)
        except (OperationalError, InterfaceError) as error:
            # Mostly an outage; a deadlock would land here too, and "try again later" is right for both.
            logger.warning(
                "websocket %s: database error (%s); closed with 1013", scope.get("path"), checks.error_line(error)
            )
            if state["closed"]:
                return None
            if not state["connect_received"]:
                await receive()  # the handshake's websocket.connect, which nothing read yet
            if not state["accepted"]:
                # Accept, then close with the code: a close before accept is an HTTP 403 that carries none.
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": "database_unavailable"})
            return None


class OriginCheckUnlessAPIKey:
    """Channels' AllowedHostsOriginValidator, for sockets that may ride on the session cookie.

    The Origin check stops another site's page from opening a socket with the visitor's cookie (cross-site
    WebSocket hijacking). An API key is not ambient: a socket that presents one authenticates as that key, never
    as the cookie, so it is let through without an Origin header — which scripts and servers do not send."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(inner)
        self.denied = OriginValidator(inner, [])  # refuses every socket, as the validator refuses a foreign one

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if api_key_from_scope(scope) is not None:
            return await self.inner(scope, receive, send)
        headers = scope.get("headers") or []
        if not any(name == b"origin" for name, _ in headers):
            # Not a browser (every browser sends Origin on a socket), so no cookie either: it goes on without one
            # and is told 4401 `not_authenticated`, as documented, rather than a bare HTTP 403 at the handshake.
            anonymous = [(name, value) for name, value in headers if name != b"cookie"]
            return await self.inner({**scope, "headers": anonymous}, receive, send)
        app = self.checked if _same_origin(scope) else self.denied
        return await app(scope, receive, send)


def _same_origin(scope: dict[str, Any]) -> bool:
    """Django's CSRF rule for the Origin of a cookie socket: its host *and port* are the ones the socket was
    opened on (or it is one of CSRF_TRUSTED_ORIGINS). ALLOWED_HOSTS compares host names only, and cookies are
    not scoped by port, so a page of another service on the same host (:9999) could open a socket with the
    visitor's cookie. Without a Host header (not a browser) the ALLOWED_HOSTS check alone decides."""
    headers = dict(scope.get("headers") or [])
    origin, host = headers.get(b"origin"), headers.get(b"host")
    if origin is None or host is None:
        return True
    origin_text = origin.decode("latin-1").strip().lower()
    if origin_text in {trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    parsed = urlsplit(origin_text)
    # The scheme counts too, as for Django (which builds the good origin from request.is_secure(), trusting the
    # proxy's X-Forwarded-Proto as SECURE_PROXY_SSL_HEADER says): an http:// page must not open the https site's
    # socket with its cookie.
    forwarded = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
    secure = scope.get("scheme") == "wss" or forwarded == "https"
    if parsed.scheme != ("https" if secure else "http"):
        return False
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    try:
        origin_port = parsed.port or default
        served = urlsplit(f"//{host.decode('latin-1').strip().lower()}")
        served_port = served.port or default
    except ValueError:  # a port that is no number
        return False
    return bool(parsed.hostname) and (parsed.hostname, origin_port) == (served.hostname, served_port)
