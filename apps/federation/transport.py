"""The one outbound HTTP call of federation, behind a function so the SSRF-guarded client can replace it.

A process-wide httpx client keeps connections to peers alive (the TLS/TCP handshake would otherwise dominate
each delivery).
"""

from __future__ import annotations

import threading

import httpx

_client: httpx.Client | None = None
_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(
                follow_redirects=False,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            )
        return _client


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    return _shared_client().post(url, content=body, headers=headers, timeout=httpx.Timeout(timeout, connect=timeout))
