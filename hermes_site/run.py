"""`make run` in Python (works without make): migrate, seed, then serve web + worker + beat until Ctrl-C.

With no REDIS_URL it starts the embedded Redis; with no DATABASE_URL settings fall back to SQLite under var/.
Every child gets SIGTERM on Ctrl-C (graceful: uvicorn drains connections, the Celery worker finishes or
requeues its job thanks to acks_late), then the embedded Redis stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import FrameType

from hermes_site.config import BASE_DIR, VAR_DIR, load_or_exit
from hermes_site.embedded import start_redis, stop_redis

PY = sys.executable


def _manage(*args: str) -> None:
    subprocess.run([PY, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Hermes platform locally.")
    parser.add_argument("--host", default=os.environ.get("HERMES_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("HERMES_PORT", "8000")))
    args = parser.parse_args(argv)
    if problem := _port_in_use(args.host, args.port):
        # Before anything starts: a second worker and beat on the same database, then a banner for a server that
        # could not bind, was what a taken port gave.
        print(
            f"hermes: cannot serve on {args.host}:{args.port}: {problem}. Stop what uses it (another `make run`?), "
            f"or pick another port: HERMES_PORT={args.port + 1} make run",
            file=sys.stderr,
        )
        return 1

    config = load_or_exit()
    VAR_DIR.mkdir(exist_ok=True)
    redis_proc = None
    if not config.redis_url:
        url, redis_proc = start_redis()
        print(f"hermes: embedded Redis at {url}", flush=True)

    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The demo agents' cards name HERMES_PUBLIC_URL: make it the address this run serves (children inherit it).
    public_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 - compared, not bound
    os.environ.setdefault("HERMES_PUBLIC_URL", f"http://{public_host}:{args.port}")
    try:
        _manage("migrate", "--noinput")
        _manage("seed_demo")
        commands = {
            "web": [
                PY,
                "-m",
                "uvicorn",
                "hermes_site.asgi:application",
                "--host",
                args.host,
                "--port",
                str(args.port),
                "--timeout-graceful-shutdown",
                "20",
                "--no-access-log",
                "--ws-per-message-deflate",  # see docs/deploy.md: small JSON frames, fan-out CPU
                "false",
            ],
            "worker": [
                PY,
                "-m",
                "celery",
                "-A",
                "hermes_site",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                *(["--pool", "solo"] if os.name == "nt" else []),
            ],
            "beat": [
                PY,
                "-m",
                "celery",
                "-A",
                "hermes_site",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(VAR_DIR / "celerybeat-schedule"),
            ],
        }
        names: dict[int, str] = {}
        for name, command in commands.items():
            child = subprocess.Popen(command, cwd=BASE_DIR)
            names[child.pid] = name
            children.append(child)
        _wait_until_serving(f"http://{public_host}:{args.port}/api/v1/health/live", children[0])
        print(
            f"\nHermes is running: http://{args.host}:{args.port}/\n"
            "  demo login: demo@hermes.local / hermes-demo\n"
            f"  health: http://{args.host}:{args.port}/api/v1/health/live\n"
            "  Ctrl-C stops web, worker, beat" + (" and the embedded Redis" if redis_proc else "") + ".\n",
            flush=True,
        )
        while not stopping:
            dead = [c for c in children if c.poll() is not None]
            if dead:
                print(
                    f"hermes: a process exited ({names[dead[0].pid]} code {dead[0].returncode}); stopping.", flush=True
                )
                return 1
            time.sleep(0.5)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"hermes: {' '.join(exc.cmd[1:3])} failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        stop_redis(redis_proc)


def _port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound now, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _wait_until_serving(url: str, web: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """The banner says "running" once the web server answers (it came a second or more before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback address
                return
        except OSError:
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
