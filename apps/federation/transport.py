"""The one outbound HTTP call of federation: through the SSRF-guarded client (apps.core.http), so a peer URL
that resolves to a private or metadata address is refused unless allowlisted (HERMES_SSRF_ALLOWLIST).

A process-wide client keeps connections to peers alive (a TCP/TLS handshake per delivery would dominate it).
"""

from __future__ import annotations

import threading

import httpx

from apps.core.http import OutboundBlocked, guarded_client

__all__ = ["OutboundBlocked", "post"]

_client: httpx.Client | None = None
_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = guarded_client(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))
        return _client


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    return _shared_client().post(url, content=body, headers=headers, timeout=httpx.Timeout(timeout, connect=timeout))
