"""`make run` in Python (works without make): migrate, seed, then serve web + worker + beat until Ctrl-C.

With no REDIS_URL it starts the embedded Redis; with no DATABASE_URL settings fall back to SQLite under var/.
That embedded default belongs to one run per checkout (var/run.lock). Every child gets SIGTERM on Ctrl-C
(graceful: uvicorn drains connections, the Celery worker finishes or requeues its job thanks to acks_late), then
the embedded Redis stops. On Linux the servers get SIGTERM too when this process is killed (_start).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import FrameType

from hermes_site.config import BASE_DIR, VAR_DIR, load_or_exit
from hermes_site.embedded import die_with_parent, start_redis, stop_redis

PY = sys.executable


# The exit code of a run stopped by Ctrl-C before it was up (128 + SIGINT, as a shell reports it).
INTERRUPTED = 128 + signal.SIGINT


class StepFailed(Exception):
    """A set-up step (migrate, seed_demo) failed; the message is its error in one line."""


class Interrupted(Exception):
    """Ctrl-C reached a set-up step: the run stops quietly."""


class CheckoutBusy(Exception):
    """Another run holds this checkout's embedded default; the message names it (pid and address)."""


# Held (an exclusive lock on the open file) by the run that uses this checkout's SQLite file and embedded Redis.
# A second run reused the first one's Redis and database: Ctrl-C on the first stopped that Redis under the second
# for good. The operating system drops the lock when the holder exits, however it exits: no stale lock to clean.
LOCK_FILE = VAR_DIR / "run.lock"
_WINDOWS_LOCK_OFFSET = 1 << 20  # Windows locks are mandatory: lock a byte past the text, so it stays readable


_lock_fd: int | None = None  # the locked LOCK_FILE, once taken: the servers inherit it (_start)


def _lock_checkout(public_url: str) -> None:
    """Lock this checkout's embedded default for the life of the process: the descriptor is left open on purpose
    (closing it would release the lock), and the file says who holds it."""
    global _lock_fd
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 512).decode(errors="replace").strip().split(maxsplit=1)
        os.close(fd)
        pid, url = holder if len(holder) == 2 else ("", "")  # empty: the holder is still starting
        if pid.isdigit() and not _alive(int(pid)):
            # The servers of a run that was killed inherit the lock (_start): on Linux they are stopping already.
            raise CheckoutBusy(
                f"the servers of a `make run` that was killed (pid {pid}, {url}) still hold this checkout's "
                f"embedded database and Redis ({VAR_DIR}): they stop by themselves in a few seconds, try again "
                "then, or give this run DATABASE_URL and REDIS_URL of its own"
            ) from None
        who = f"(pid {pid}, {url}) " if pid else ""
        stop = f"Ctrl-C where it runs, or `kill {pid}`" if pid else "Ctrl-C where it runs"
        raise CheckoutBusy(
            f"another `make run` {who}already uses this checkout's embedded database and Redis ({VAR_DIR}): stop "
            f"it first ({stop}), or give this run DATABASE_URL and REDIS_URL of its own"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {public_url}\n".encode())
    _lock_fd = fd


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) sends CTRL_C_EVENT there; children do not inherit the lock anyway
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def _manage(*args: str) -> None:
    result = subprocess.run(
        [PY, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR, stderr=subprocess.PIPE, text=True, check=False
    )
    if result.returncode == 0:
        sys.stderr.write(result.stderr)  # warnings stay visible
        return
    if result.returncode == -signal.SIGINT or result.stderr.rstrip().endswith("KeyboardInterrupt"):
        # Ctrl-C goes to the whole process group: the step died of it, which is no failure to explain.
        raise Interrupted
    # Django's own commands (migrate) end in a traceback: a mistyped DATABASE_URL read as 40 lines of frames.
    raise StepFailed(f"manage.py {args[0]} failed: {_exception_of(result.stderr)}")


def _exception_of(stderr: str) -> str:
    """The exception a traceback ends with (with a driver's hint lines), as one line; the text itself otherwise."""
    lines = stderr.rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith(("  File ", "    ", "Traceback "))]
    tail = lines[frames[-1] + 1 :] if frames else lines[-3:]
    return "; ".join(dict.fromkeys(line.strip() for line in tail if line.strip())) or "no error text"


# A worker or beat that exits is started again, this many times within RESTART_WINDOW seconds, before `make run`
# gives up: kombu's Redis transport can end the worker for good when Redis restarts under a running job
# ("Unrecoverable error: AttributeError … 'hostname'"), and the platform is meant to ride out a Redis restart.
MAX_RESTARTS = 5
RESTART_WINDOW = 300.0
RESTARTABLE = ("worker", "beat")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Hermes platform locally.")
    parser.add_argument("--host", default=os.environ.get("HERMES_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=_port, default=os.environ.get("HERMES_PORT", "8000"))
    args = parser.parse_args(argv)
    if problem := _bind_problem(args.host, args.port):
        # Before anything starts: a second worker and beat on the same database, then a banner for a server that
        # could not bind, was what a taken port gave.
        print(f"hermes: cannot serve on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1

    # The demo agents' cards name HERMES_PUBLIC_URL: make it the address this run serves (children inherit it).
    # Before the configuration is read: production requires the variable, and this run does know its address.
    public_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 - compared, not bound
    os.environ.setdefault("HERMES_PUBLIC_URL", f"http://{public_host}:{args.port}")
    config = load_or_exit()
    VAR_DIR.mkdir(exist_ok=True)
    if not config.redis_url or not config["DATABASE_URL"]:  # the embedded Redis or the SQLite file under var/
        try:
            _lock_checkout(f"http://{public_host}:{args.port}/")
        except CheckoutBusy as exc:
            print(f"hermes: {exc}.", file=sys.stderr)
            return 1
    redis_proc = None
    if not config.redis_url:
        url, redis_proc = start_redis(stop_with_this_process=True)
        print(f"hermes: embedded Redis at {url}", flush=True)

    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGHUP"):  # the terminal closed: the children, in sessions of their own, hear it from us
        signal.signal(signal.SIGHUP, stop)
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
                # uvicorn would otherwise take the client address from X-Forwarded-For of any loopback client;
                # Hermes reads that header itself, only from HERMES_TRUSTED_PROXIES (apps.core.http).
                "--no-proxy-headers",
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
        restarts: list[float] = []
        for name, command in commands.items():
            child = _start(command)
            names[child.pid] = name
            children.append(child)
        health = f"http://{public_host}:{args.port}/api/v1/health/live"
        if not _wait_until_serving(health, children[0], lambda: stopping):
            if stopping:  # Ctrl-C while the servers started: the finally below stops them
                return INTERRUPTED
            web = children[0].returncode
            reason = f"exited (code {web}) before answering" if web is not None else f"did not answer {health} in time"
            print(f"hermes: the web server {reason}; its output is above. Stopping.", file=sys.stderr, flush=True)
            return 1
        not_ready = _not_ready(f"http://{public_host}:{args.port}/api/v1/health/ready")
        print(
            f"\nHermes is running: http://{args.host}:{args.port}/\n"
            # The web answers without Redis or the broker: say so here, not only in a page that fails later.
            + (f"  NOT READY: {not_ready}; `python manage.py doctor` says why\n" if not_ready else "")
            + "  demo login: demo@hermes.local / hermes-demo\n"
            f"  health: http://{args.host}:{args.port}/api/v1/health/live\n"
            "  Ctrl-C stops web, worker, beat" + (" and the embedded Redis" if redis_proc else "") + ".\n",
            flush=True,
        )
        while not stopping:
            for index, child in enumerate(children):
                if stopping or child.poll() is None:
                    continue
                name = names[child.pid]
                now = time.monotonic()
                restarts = [moment for moment in restarts if now - moment < RESTART_WINDOW]
                if name not in RESTARTABLE or len(restarts) >= MAX_RESTARTS:
                    print(f"hermes: a process exited ({name} code {child.returncode}); stopping.", flush=True)
                    return 1
                restarts.append(now)
                print(f"hermes: the {name} exited (code {child.returncode}); starting it again.", flush=True)
                children[index] = _start(commands[name])
                names[children[index].pid] = name
            time.sleep(0.5)
        return 0
    except Interrupted:
        return INTERRUPTED
    except StepFailed as exc:
        if stopping:  # Ctrl-C while the step ran: whatever it died of, the operator asked to stop
            return INTERRUPTED
        print(
            f"hermes: {exc}. `python manage.py doctor` checks the configuration and says how to fix it.",
            file=sys.stderr,
        )
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


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    """A server child in a session of its own: Ctrl-C in the terminal reaches the whole foreground group, and a
    child still importing Django died of it with a KeyboardInterrupt traceback (web: "failed to start"). This
    process is the one that hears Ctrl-C, and it stops every child with SIGTERM (the finally in main).

    Being in a session of its own, a child outlived a `make run` that was killed (SIGKILL, the OOM killer): web,
    worker and beat went on under PID 1, and the next run started a second worker and beat. So each child also
    holds the checkout lock (the descriptor is inherited: the lock stays taken until the last of them exits), and
    on Linux it gets SIGTERM when this process dies."""
    lock = [_lock_fd] if _lock_fd is not None else []
    if os.name == "nt":
        return subprocess.Popen(command, cwd=BASE_DIR)
    return subprocess.Popen(
        command, cwd=BASE_DIR, start_new_session=True, pass_fds=lock, preexec_fn=die_with_parent(os.getpid())
    )


def _port(text: str) -> int:
    """--port, or HERMES_PORT (argparse converts a string default the same way: one line, not a traceback)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"the port (--port or HERMES_PORT) must be from 1 to 65535, not {text!r}")
    return port


def _bind_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound now, and what to change (the port or the address), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"{reason}. Stop what uses it (another `make run`?), or pick another port: "
                    f"HERMES_PORT={port + 1} make run"
                )
            if exc.errno == errno.EACCES:
                return f"{reason}: ports below 1024 need privileges. Pick another port: HERMES_PORT=8000 make run"
            # EADDRNOTAVAIL, a name that does not resolve (gaierror): the address is the problem, not the port.
            return (
                f"{reason}: {host} is not an address of this machine. Use one it has: HERMES_HOST=127.0.0.1 "
                "make run (0.0.0.0 serves every interface)"
            )
    return None


def _not_ready(url: str) -> str | None:
    """What the readiness probe at `url` finds down ("redis, broker down"), or None when it answers ready."""
    try:
        with urllib.request.urlopen(url, timeout=10):  # noqa: S310 - our own loopback address
            return None
    except urllib.error.HTTPError as answer:  # 503 names what is down
        try:
            failing = json.loads(answer.read()).get("failing")
        except (ValueError, AttributeError):
            failing = None
        if isinstance(failing, list) and failing:
            return f"{', '.join(map(str, failing))} down"
        return f"the readiness probe answered {answer.code}"
    except OSError as exc:
        return f"the readiness probe did not answer ({exc})"


def _wait_until_serving(
    url: str, web: subprocess.Popen[bytes], stopping: Callable[[], bool], timeout: float = 30.0
) -> bool:
    """Whether the web server answers `url`: the banner says "running" only then. False as soon as the server
    exits or the run is asked to stop (the banner came after a web that had died of Ctrl-C)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None and not stopping():
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback address
                return True
        except OSError:
            time.sleep(0.2)
    return False


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the handlers above were installed (reading the configuration...)
        sys.exit(INTERRUPTED)
