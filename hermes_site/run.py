"""`make run` in Python (works without make): migrate, seed, then serve web + worker + beat until Ctrl-C.

With no REDIS_URL it starts the embedded Redis; with no DATABASE_URL settings fall back to SQLite under var/.
That embedded default belongs to one run per checkout (var/run.lock). Ctrl-C stops the servers in order
(_stop_servers): the Celery worker first, which finishes its running jobs while the web (and the demo agents it
serves) still answers, then web and beat, then the embedded Redis, each step bounded. On Linux the servers get
SIGTERM too when this process is killed (_start), and so does this process when make, its parent, is (_stop_with_make).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
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
from pathlib import Path
from types import FrameType

from hermes_site.config import BASE_DIR, VAR_DIR, is_allowed_host, load_or_exit
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

# How long a stop waits for the worker's running jobs (Celery's warm shutdown), then for web and beat, before it
# kills what is left. The web's own drain is `--timeout-graceful-shutdown` (20 s) below.
WORKER_GRACE = 30.0
SERVERS_GRACE = 25.0

# Binds that serve every interface (of one family: uvicorn's asyncio sockets on `::` are IPv6-only), and the
# loopback address this run reaches them on.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - compared, not bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Hermes platform locally.")
    parser.add_argument("--host", default=os.environ.get("HERMES_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=_port, default=os.environ.get("HERMES_PORT", "8000"))
    args = parser.parse_args(argv)
    if os.environ.get("MAKELEVEL"):  # started by `make run`: make is the process the operator sees and kills
        _stop_with_make()
    if problem := _bind_problem(args.host, args.port):
        # Before anything starts: a second worker and beat on the same database, then a banner for a server that
        # could not bind, was what a taken port gave.
        print(f"hermes: cannot serve on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1

    # The demo agents' cards name HERMES_PUBLIC_URL: make it the address this run serves (children inherit it).
    # Before the configuration is read: production requires the variable, and this run does know its address.
    base = _http_url(WILDCARDS.get(args.host, args.host), args.port)
    os.environ.setdefault("HERMES_PUBLIC_URL", base)
    config = load_or_exit()
    lan_hosts: list[str] = []
    if config.env != "production" and "ALLOWED_HOSTS" not in os.environ and not _is_loopback(args.host):
        # Served beyond loopback in dev with the default ALLOWED_HOSTS (localhost and loopback addresses): every
        # other machine's request, and the banner's http://0.0.0.0:PORT/, got 400 DisallowedHost. Not "*": that
        # would let any site a browser on this machine visits reach this DEBUG server by DNS rebinding (its name
        # resolving to this address), and the demo login is public. So the names the servers answer to, listed.
        lan_hosts = _lan_hosts(args.host)
        os.environ["ALLOWED_HOSTS"] = ",".join(dict.fromkeys([*config.allowed_hosts, *lan_hosts]))
    VAR_DIR.mkdir(exist_ok=True)
    if not config.redis_url or not config["DATABASE_URL"]:  # the embedded Redis or the SQLite file under var/
        try:
            _lock_checkout(f"{base}/")
        except CheckoutBusy as exc:
            print(f"hermes: {exc}.", file=sys.stderr)
            return 1
    redis_proc = None
    if not config.redis_url:
        url, redis_proc = start_redis(stop_with_this_process=True)
        print(f"hermes: embedded Redis at {url}", flush=True)

    children: list[subprocess.Popen[bytes]] = []
    names: dict[int, str] = {}
    stopping = False
    hurry = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, hurry
        hurry = hurry or (stopping and signum == signal.SIGINT)  # Ctrl-C again: no more waiting for jobs
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
        restarts: list[float] = []
        for name, command in commands.items():
            child = _start(command)
            names[child.pid] = name
            children.append(child)
        health = f"{base}/api/v1/health/live"
        if not _wait_until_serving(health, children[0], lambda: stopping):
            if stopping:  # Ctrl-C while the servers started: the finally below stops them
                return INTERRUPTED
            web = children[0].returncode
            reason = f"exited (code {web}) before answering" if web is not None else f"did not answer {health} in time"
            print(f"hermes: the web server {reason}; its output is above. Stopping.", file=sys.stderr, flush=True)
            return 1
        not_ready = _not_ready(f"{base}/api/v1/health/ready")
        print(
            f"\nHermes is running: {base}/\n"
            + _elsewhere(args.host, args.port, lan_hosts)
            # The web answers without Redis or the broker: say so here, not only in a page that fails later.
            + (f"  NOT READY: {not_ready}; `python manage.py doctor` says why\n" if not_ready else "")
            + "  demo login: demo@hermes.local / hermes-demo\n"
            f"  health: {health}\n"
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
        _stop_servers([(names[child.pid], child) for child in children], lambda: hurry)
        stop_redis(redis_proc)  # last: the worker acknowledges its jobs and web and beat write to it until they exit


def _stop_servers(servers: list[tuple[str, subprocess.Popen[bytes]]], hurry: Callable[[], bool]) -> None:
    """Stop the worker first, then web and beat. All at once, the web (which serves the demo agents) cut the
    stream of the job the worker was running; the worker queued a retry in the embedded Redis, which stops with
    the run and keeps nothing, and after the next start the task failed ("The agent no longer knows this task").
    SIGTERM is the worker's warm shutdown: it takes no new job and finishes the running ones, for up to
    WORKER_GRACE seconds (Ctrl-C again: at once). A job still running then is killed; its task row stays as it was
    and the sweeper picks it up after the next start (docs/deploy.md, "Graceful shutdown")."""
    workers = [child for name, child in servers if name == "worker"]
    _terminate(workers, WORKER_GRACE, hurry, waiting="the worker is finishing its running jobs")
    _terminate([child for name, child in servers if name != "worker"], SERVERS_GRACE, hurry)


def _terminate(
    children: list[subprocess.Popen[bytes]], grace: float, hurry: Callable[[], bool], waiting: str = ""
) -> None:
    """SIGTERM to each child, then SIGKILL to what is left of it (its whole session: the worker's pool too) after
    `grace` seconds or once `hurry()`. `waiting` is said when that takes more than a moment."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    began = time.monotonic()
    said = not waiting
    while any(child.poll() is None for child in children) and time.monotonic() < began + grace and not hurry():
        if not said and time.monotonic() > began + 5:  # an idle worker takes about 2 s
            print(f"hermes: {waiting} (up to {grace:g} s; Ctrl-C again stops it now).", flush=True)
            said = True
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:  # not reaped: its pid (and session id) is still its own
            if os.name == "nt":
                child.kill()
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _stop_with_make() -> None:
    """Have the kernel send this process SIGTERM when its parent (make) dies, so `kill -9` on the `make run`
    process (or the OOM killer choosing make) stops the run in the usual order rather than leaving it all running
    under PID 1. make itself forwards SIGTERM and waits for us on Ctrl-C, so this fires only when make is killed.
    Linux only (die_with_parent); elsewhere the orchestrator outlives a killed make."""
    arm = die_with_parent(os.getppid())
    if arm is not None:
        arm()


def _http_url(host: str, port: int) -> str:
    """http://host:port, with an IPv6 address in brackets (http://::1:8000 is no URL)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _lan_hosts(host: str) -> list[str]:
    """The ALLOWED_HOSTS entries other machines use to reach a bind on `host`: this machine's names, and `host`
    itself or, for a wildcard bind, every address of its family."""
    # getfqdn() is "localhost" on a machine whose name maps to 127.0.0.1 only: no name for another machine.
    names = [name for name in (socket.gethostname(), socket.getfqdn()) if name.split(".")[0] != "localhost"]
    if host in WILDCARDS:
        addresses = sorted(_local_addresses(socket.AF_INET6 if ":" in host else socket.AF_INET))
    else:
        addresses = [host]
    entries = [*names, *(f"[{address}]" if ":" in address else address for address in addresses)]
    return [entry for entry in dict.fromkeys(entries) if entry and is_allowed_host(entry)]


def _local_addresses(family: socket.AddressFamily) -> set[str]:
    """This machine's addresses of `family`, but loopback and link-local (a URL with one needs a zone index)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        found |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, family)}
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1" if family == socket.AF_INET else "2001:db8::1", 9))  # UDP: nothing is sent
        found.add(str(probe.getsockname()[0]))  # the address of the default route
    with contextlib.suppress(OSError):  # Linux lists them all
        if family == socket.AF_INET6:
            for line in Path("/proc/net/if_inet6").read_text().splitlines():
                found.add(str(ipaddress.IPv6Address(int(line.split()[0], 16))))
        else:
            last = ""
            for line in Path("/proc/net/fib_trie").read_text().splitlines():
                if "|-- " in line:
                    last = line.split("|-- ", 1)[1].strip()
                elif "/32 host LOCAL" in line and last:
                    found.add(last)
    usable: set[str] = set()
    for address in found:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            continue
        if not (parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified):
            usable.add(str(parsed))
    return usable


def _elsewhere(host: str, port: int, lan_hosts: list[str]) -> str:
    """The banner's line on other machines: how they reach a bind beyond loopback."""
    if _is_loopback(host):
        return ""
    where = f"every IPv{6 if ':' in host else 4} interface ({host})" if host in WILDCARDS else host
    if not lan_hosts:  # ALLOWED_HOSTS set by the operator (or production): it says which names answer
        return f"  listening on {where}; other machines use a name in ALLOWED_HOSTS\n"
    urls = " ".join(_http_url(entry.strip("[]"), port) + "/" for entry in lan_hosts)
    return f"  listening on {where}; from other machines: {urls}\n"


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    """A server child in a session of its own: Ctrl-C in the terminal reaches the whole foreground group, and a
    child still importing Django died of it with a KeyboardInterrupt traceback (web: "failed to start"). This
    process is the one that hears Ctrl-C, and it stops every child with SIGTERM, in order (_stop_servers).

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
