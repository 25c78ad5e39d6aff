"""Who may read operational internals (`/metrics`, the health breakdown): one policy for both.

Allowed: a request bearing `Authorization: Bearer <METRICS_TOKEN>`, a client address inside
METRICS_ALLOWED_IPS (addresses or CIDR networks), or a staff user's session. Liveness and readiness stay open
because orchestrators probe them anonymously and they reveal nothing but up/down.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _client_in_allowed_networks(request: HttpRequest) -> bool:
    # REMOTE_ADDR, not X-Forwarded-For: a header is client-controlled; deployments behind a proxy use the token.
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            if client in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _bearer_matches(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


def is_operator(request: HttpRequest) -> bool:
    if _bearer_matches(request) or _client_in_allowed_networks(request):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)
