"""A fault-injecting HTTP proxy for the federation chaos tests.

It sits between two Hermes instances, parses each HTTP/1.1 request and, per request, either forwards it or injects
a fault. Faults are chosen by `self.mode` (a fixed fault for every request) or drawn from `self.mix` (weights) with
a seeded RNG, so a failing run can be replayed.

    pass            forward, answer with the upstream response
    timeout         hold the request longer than the sender's timeout, never forward
    http_503        answer 503 (with Retry-After: 1) without forwarding
    http_500        answer 500 without forwarding
    reset           reset the connection (RST) before forwarding
    reset_after     forward (the receiver stores the message!) then reset before the sender sees the receipt:
                    the sender must retry and the receiver must deduplicate
    bad_signature   forward with a corrupted webhook-signature (the receiver answers 401: a permanent fault)
"""

from __future__ import annotations

import asyncio
import base64
import collections
import random
import socket
import struct
import threading
from typing import Any

FAULTS = ("pass", "timeout", "http_503", "http_500", "reset", "reset_after", "bad_signature")


class ChaosProxy:
    def __init__(self, upstream_port: int, *, seed: int = 7, hold_seconds: float = 3.0) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.mix: dict[str, float] | None = None
        self.hold_seconds = hold_seconds
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name="chaos-proxy")
        self.thread.start()
        self._ready.wait(10)

    # --- control (from the test thread) ---
    def set(self, mode: str = "pass", mix: dict[str, float] | None = None) -> None:
        assert mode in FAULTS and all(k in FAULTS for k in (mix or {}))
        self.mode, self.mix = mode, mix

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    # --- proxy ---
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def _choose(self) -> str:
        if self.mix:
            names, weights = zip(*self.mix.items(), strict=True)
            return self.rng.choices(names, weights)[0]
        return self.mode

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return lines[0].encode("latin1"), headers, body

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns close() into a TCP RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _forward(self, request_line: bytes, headers: dict[str, str], body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        headers = {**headers, "connection": "close", "host": f"127.0.0.1:{self.upstream_port}"}
        raw = request_line + b"\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin1")
        writer.write(raw + b"\r\n" + body)
        await writer.drain()
        response = await reader.read()
        writer.close()
        return response

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                fault = self._choose()
                self.counts[fault] += 1
                if await self._apply(fault, request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _apply(self, fault: str, request: tuple[bytes, dict[str, str], bytes], writer: Any) -> bool:
        """Returns True when the client connection is finished."""
        line, headers, body = request
        if fault == "timeout":
            await asyncio.sleep(self.hold_seconds)
            self._reset(writer)
            return True
        if fault in ("http_503", "http_500"):
            status = b"503 Service Unavailable" if fault == "http_503" else b"500 Internal Server Error"
            extra = b"retry-after: 1\r\n" if fault == "http_503" else b""
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 5\r\n" + extra + b"\r\nchaos")
            await writer.drain()
            return False
        if fault == "reset":
            self._reset(writer)
            return True
        if fault == "bad_signature":
            forged = " ".join(
                "v1," + base64.b64encode(bytes(32)).decode() for _ in headers.get("webhook-signature", "x").split()
            )
            headers = {**headers, "webhook-signature": forged}
        response = await self._forward(line, headers, body)
        if fault == "reset_after":
            self._reset(writer)
            return True
        writer.write(response)
        await writer.drain()
        return True  # upstream said connection: close; so do we
