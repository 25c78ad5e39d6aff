"""Who may read operational internals (`/metrics`, the worker exporter, the health breakdown): one policy.

Allowed: a request bearing `Authorization: Bearer <METRICS_TOKEN>`, a client address inside
METRICS_ALLOWED_IPS (addresses or CIDR networks), or (HTTP endpoints only) a staff user's session. Liveness and
readiness stay open because orchestrators probe them anonymously and they reveal nothing but up/down.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from apps.core.http import in_networks

# The headers (as WSGI environ / request.META keys) by which a proxy says whom it forwards for, or that it
# forwarded at all; any X-Forwarded-* header counts too. Nginx sets X-Real-IP, RFC 7239 proxies Forwarded, and
# Apache and Varnish add Via.
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_VIA", "HTTP_X_CLIENT_IP", "HTTP_TRUE_CLIENT_IP")


def proxy_header(meta: Mapping[str, Any]) -> str | None:
    """The first proxy header of a WSGI environ or `request.META` (its value), None when there is none."""
    for key, value in meta.items():
        if value and (key in PROXY_HEADERS or key.startswith("HTTP_X_FORWARDED_")):
            return str(value)
    return None


def address_allowed(remote_addr: str, forwarded_for: str | None = None) -> bool:
    """`forwarded_for`: the value of a proxy header (`proxy_header`), if the request has one."""
    # The server's peer, never an X-Forwarded-For entry (a header is client-controlled). And a request that came
    # through a proxy is not the local machine, whatever its peer address: a reverse proxy on the same host would
    # otherwise hand every visitor 127.0.0.1. A proxy may say so in any of PROXY_HEADERS, not only
    # X-Forwarded-For. Behind a proxy, scrape with the token.
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
        proxy_header(request.META),
    )


def is_operator(request: HttpRequest) -> bool:
    if request_allowed(request):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)
