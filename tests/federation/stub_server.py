"""A scripted HTTP server for delivery tests: each request pops the next behaviour (status/headers/body, a delay
longer than the client timeout, or a dropped connection)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    delay: float = 0.0
    drop: bool = False


class StubServer:
    def __init__(self, receipt_secret: bytes | None = None) -> None:
        """With `receipt_secret`, an unscripted request gets a receipt signed like a real peer's."""
        self.script: deque[Reply] = deque()
        self.receipt_secret = receipt_secret
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if stub.script:
                    reply = stub.script.popleft()
                elif stub.receipt_secret is not None:
                    reply = stub.receipt_for(self.headers.get("webhook-id", ""))
                else:
                    reply = Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def receipt_for(self, message_id: str) -> Reply:
        from apps.federation.signing import sign_headers

        body = json.dumps({"receipt": {"message_id": message_id, "status": "accepted"}}).encode()
        return Reply(200, sign_headers(message_id, body, [self.receipt_secret or b""]), body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
