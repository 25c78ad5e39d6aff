"""A slow or hostile peer cannot hold a delivery worker: HERMES_FEDERATION_TIMEOUT is the whole attempt, from
connecting to the answer's last byte, however the peer spreads its bytes out.

httpx's timeouts are per socket read, so a peer that answered `200` with `content-length: 100000` and then one
byte every few seconds held the worker indefinitely (and, once the lease expired, the next worker too). The peer
here is a raw socket server, since trickling a status line or a header is below what an HTTP server lets one do.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from apps.federation import actions, delivery, transport
from apps.federation.models import DeliveryAttempt, Effect, Outbox, OutboxStatus

SECRET = b"t" * 32
TRICKLE_EVERY = 0.2  # well under any per-read timeout
TRICKLE_FOR = 4.0  # then the peer hangs up: without the deadline an attempt lasted this long, not forever

Behaviour = Callable[[socket.socket], None]


def trickle(conn: socket.socket, head: bytes, byte: bytes = b"a") -> None:
    conn.sendall(head)
    give_up = time.monotonic() + TRICKLE_FOR
    while time.monotonic() < give_up:
        conn.sendall(byte)
        time.sleep(TRICKLE_EVERY)


def trickled_body(conn: socket.socket) -> None:
    trickle(conn, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n", b" ")


def trickled_header(conn: socket.socket) -> None:
    trickle(conn, b"HTTP/1.1 200 OK\r\nx-slow: ")


def trickled_status_line(conn: socket.socket) -> None:
    trickle(conn, b"", b"H")


def quick(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")


class HostilePeer:
    """Answers each request (keep-alive: several per connection) with the next scripted behaviour."""

    def __init__(self) -> None:
        self.script: deque[Behaviour] = deque()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            try:
                while True:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            return
                        head += line
                    length = next(
                        (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")),
                        0,
                    )
                    reader.read(length)
                    (self.script.popleft() if self.script else quick)(conn)
            except OSError:  # the client hung up on us: what these tests expect of it
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def hostile() -> Iterator[HostilePeer]:
    peer = HostilePeer()
    yield peer
    peer.close()


@pytest.mark.parametrize("behaviour", [trickled_body, trickled_header, trickled_status_line])
def test_post_ends_at_the_deadline_however_the_answer_is_trickled(hostile: HostilePeer, behaviour: Behaviour) -> None:
    hostile.script.append(behaviour)
    started = time.monotonic()
    with pytest.raises(transport.TooSlow) as slow:
        transport.post(hostile.url + "/receive", b"{}", {}, timeout=1.0)
    elapsed = time.monotonic() - started
    assert str(slow.value) == "the peer's answer took longer than 1 s"
    assert 0.9 < elapsed < 3.0, elapsed  # (without the deadline: the whole trickle, 4 s)


def test_a_reused_keep_alive_connection_keeps_to_the_deadline_too(hostile: HostilePeer) -> None:
    hostile.script.extend([quick, trickled_body])
    assert transport.post(hostile.url + "/a", b"{}", {}, timeout=1.0).content == b"{}"
    started = time.monotonic()
    with pytest.raises(transport.TooSlow):
        transport.post(hostile.url + "/b", b"{}", {}, timeout=1.0)
    assert time.monotonic() - started < 3.0
    assert hostile.connections == 1  # the second request went over the pooled connection of the first
    # That connection was dropped, not returned to the pool half-read: the next request opens a new one and works.
    assert transport.post(hostile.url + "/c", b"{}", {}, timeout=1.0).status_code == 200
    assert hostile.connections == 2


def test_an_answer_is_read_up_to_the_size_limit(hostile: HostilePeer) -> None:
    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 500 Oops\r\ncontent-length: 5242880\r\n\r\n" + b"e" * 5 * 1024 * 1024)

    hostile.script.append(huge)
    answer = transport.post(hostile.url + "/receive", b"{}", {}, timeout=5.0)
    assert answer.status_code == 500 and answer.oversized
    assert answer.content == b"e" * transport.MAX_ANSWER_BYTES


@pytest.mark.django_db
@override_settings(HERMES_FEDERATION_TIMEOUT=1.0)
def test_a_trickling_peer_fails_the_attempt_as_retryable_at_the_deadline(org: Any, hostile: HostilePeer) -> None:
    peer = actions.create_peer(name="slow", base_url=hostile.url, local_name="paris")
    actions.add_key(peer, secret=SECRET)
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    message = actions.send_message(org=org, recipient="globex@slow", payload={"n": 1})
    row = Outbox.objects.for_org(org).get(message=message)
    hostile.script.append(trickled_body)
    started = time.monotonic()
    assert delivery.deliver(row.pk) == OutboxStatus.FAILED
    assert time.monotonic() - started < 3.0  # well inside the claim's lease (timeout + 30 s)
    attempt = DeliveryAttempt.objects.for_org(org).get(outbox=row)
    assert attempt.outcome == "retry" and attempt.http_status is None
    assert attempt.error == "timeout: the peer's answer took longer than 1 s"
    assert Outbox.objects.for_org(org).get(pk=row.pk).last_error == "timeout: the peer's answer took longer than 1 s"
