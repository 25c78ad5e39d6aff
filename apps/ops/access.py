"""Who may read operational internals (`/metrics`, the worker exporter, the health breakdown): one policy.

Allowed: a request bearing `Authorization: Bearer <METRICS_TOKEN>`, a client address inside
METRICS_ALLOWED_IPS (addresses or CIDR networks), or (HTTP endpoints only) a staff user's session. Liveness and
readiness stay open because orchestrators probe them anonymously and they reveal nothing but up/down.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest

from apps.core.http import in_networks


def address_allowed(remote_addr: str, forwarded_for: str | None = None) -> bool:
    # The server's peer, never an X-Forwarded-For entry (a header is client-controlled). And a request that came
    # through a proxy is not the local machine, whatever its peer address: a reverse proxy on the same host would
    # otherwise hand every visitor 127.0.0.1. Behind a proxy, scrape with the token.
    if forwarded_for:
        return False
    return in_networks(remote_addr, settings.METRICS_ALLOWED_IPS)


def bearer_allowed(authorization: str) -> bool:
    token = settings.METRICS_TOKEN
    if not token or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization.removeprefix("Bearer ").strip().encode(), token.encode())


def machine_allowed(remote_addr: str, authorization: str, forwarded_for: str | None = None) -> bool:
    return bearer_allowed(authorization) or address_allowed(remote_addr, forwarded_for)


def request_allowed(request: HttpRequest) -> bool:
    """`machine_allowed` for a Django request."""
    return machine_allowed(
        request.META.get("REMOTE_ADDR", ""),
        request.headers.get("Authorization", ""),
        request.META.get("HTTP_X_FORWARDED_FOR"),
    )


def is_operator(request: HttpRequest) -> bool:
    if request_allowed(request):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)
