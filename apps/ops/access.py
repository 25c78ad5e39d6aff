"""Who may read operational internals (`/metrics`, the worker exporter, the health breakdown): one policy.

Allowed: a request bearing `Authorization: Bearer <METRICS_TOKEN>`, a client address inside
METRICS_ALLOWED_IPS (addresses or CIDR networks), or (HTTP endpoints only) a staff user's session. Liveness and
readiness stay open because orchestrators probe them anonymously and they reveal nothing but up/down.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest


def address_allowed(remote_addr: str) -> bool:
    # REMOTE_ADDR, not X-Forwarded-For: a header is client-controlled; deployments behind a proxy use the token.
    try:
        client = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            if client in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def bearer_allowed(authorization: str) -> bool:
    token = settings.METRICS_TOKEN
    if not token or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization.removeprefix("Bearer ").strip().encode(), token.encode())


def machine_allowed(remote_addr: str, authorization: str) -> bool:
    return bearer_allowed(authorization) or address_allowed(remote_addr)


def is_operator(request: HttpRequest) -> bool:
    if machine_allowed(request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization", "")):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)
