"""The one outbound HTTP call of federation: through the SSRF-guarded client (apps.core.http), so a peer URL
that resolves to a private or metadata address is refused unless allowlisted (HERMES_SSRF_ALLOWLIST).

A process-wide client keeps connections to peers alive (a TCP/TLS handshake per delivery would dominate it).

A peer is not trusted to be quick or brief, so every attempt has two bounds:

- a deadline: the `timeout` given to `post` is the whole attempt, from opening the connection to the answer's
  last byte. httpx's timeouts are per socket operation, so a peer that answers a byte every few seconds (into the
  status line, the headers or the body) never trips them and held a worker for as long as it liked. Here every
  connect, TLS handshake, read and write gets only what is left of the attempt (`_DeadlineStream`); past it the
  attempt ends with `TooSlow`. Name resolution is not covered: it is the system resolver's own timeout.
- a size: at most `MAX_ANSWER_BYTES` of the answer are read. A receipt is a few hundred bytes; of anything bigger
  (a proxy's error page, a hostile peer's megabytes) only the beginning is kept, and the connection is dropped
  instead of drained (`Answer.oversized`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from apps.core.http import OutboundBlocked, guarded_client

__all__ = ["MAX_ANSWER_BYTES", "Answer", "OutboundBlocked", "TooSlow", "post"]

# A signed receipt is a few hundred bytes, a Hermes error body about as much: 64 KiB is generous for both.
MAX_ANSWER_BYTES = 64 * 1024
# Writes are re-bounded every chunk, so a peer that reads our (up to 1 MB) request slowly cannot stretch one write.
_WRITE_CHUNK = 16 * 1024


class TooSlow(Exception):
    """The attempt ran past its deadline. A transport failure: retried like a timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the peer's answer took longer than {seconds:g} s")


@dataclass(frozen=True)
class Answer:
    """A peer's answer, read within both bounds."""

    status_code: int
    headers: httpx.Headers
    content: bytes  # the whole body or, when `oversized`, its first MAX_ANSWER_BYTES
    oversized: bool = False

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def oversized_error() -> str:
    return f"the peer's answer exceeded {MAX_ANSWER_BYTES} bytes"


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic()
    seconds: float


# Set by `post` for the duration of one attempt. A context variable, not an attribute of the client: the client
# and its pooled connections are shared by every thread of the process, each attempt has its own deadline.
_deadline: ContextVar[_Deadline | None] = ContextVar("federation_deadline", default=None)


@contextmanager
def _within_deadline(timeout: float | None) -> Iterator[float | None]:
    """Yield the timeout for one socket operation: the one httpx asked for, capped by what is left of the attempt.
    A timeout of the capped operation is the deadline passing, and is reported as such."""
    deadline = _deadline.get()
    if deadline is None:  # not inside `post` (nothing else uses this client, but stay a plain stream then)
        yield timeout
        return
    left = deadline.at - time.monotonic()
    if left <= 0:
        raise TooSlow(deadline.seconds)
    capped_by_deadline = timeout is None or left <= timeout
    try:
        yield left if capped_by_deadline else timeout
    except httpcore.TimeoutException as exc:
        if capped_by_deadline:
            raise TooSlow(deadline.seconds) from exc
        raise


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _within_deadline(timeout) as bounded:
            return self._inner.read(max_bytes, bounded)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_CHUNK):
            with _within_deadline(timeout) as bounded:
                self._inner.write(buffer[start : start + _WRITE_CHUNK], bounded)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        with _within_deadline(timeout) as bounded:
            return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Wraps the SSRF guard's backend (which resolves, checks and connects): every stream it opens keeps to the
    current attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with _within_deadline(timeout) as bounded:
            stream = self._inner.connect_tcp(
                host, port, timeout=bounded, local_address=local_address, socket_options=socket_options
            )
        return _DeadlineStream(stream)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return self._inner.connect_unix_socket(*args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_client: httpx.Client | None = None
_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            client = guarded_client()
            # httpx has no parameter for the network backend; apps.core.http swaps it in the same way. Wrapping
            # (not replacing) the guard's backend keeps its checks on every connection.
            pool = client._transport._pool  # type: ignore[attr-defined]
            pool._network_backend = _DeadlineBackend(pool._network_backend)
            _client = client
        return _client


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` and read the answer, all within `timeout` seconds and MAX_ANSWER_BYTES (see the module docstring).

    Raises TooSlow past the deadline, OutboundBlocked for a refused address, httpx.InvalidURL for a URL httpx cannot
    parse (not an httpx.HTTPError), httpx.HTTPError for other transport failures."""
    token = _deadline.set(_Deadline(time.monotonic() + timeout, timeout))
    # The size bound counts bytes as they come off the wire; a compressed answer could inflate far past it, so
    # none is asked for (a peer that compresses anyway sends bytes no receipt check will accept: retried).
    headers = {**headers, "accept-encoding": "identity"}
    try:
        with _shared_client().stream(
            "POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
        ) as response:
            content = bytearray()
            oversized = False
            for chunk in response.iter_raw():
                content += chunk
                if len(content) > MAX_ANSWER_BYTES:
                    # Leaving the block closes the response unread: the connection is dropped, not drained.
                    oversized = True
                    del content[MAX_ANSWER_BYTES:]
                    break
            return Answer(response.status_code, response.headers, bytes(content), oversized)
    finally:
        _deadline.reset(token)
