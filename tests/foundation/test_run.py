"""`make run`'s Python entry point on the embedded default: SQLite file + embedded Redis, web + worker + beat,
seeded demo login, liveness served, and Ctrl-C (SIGINT) stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hermes_site.config import BASE_DIR
from hermes_site.embedded import REDIS_DIR


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    """`make run` on a machine with nothing configured: a SQLite file here and the embedded Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "CELERY_", "HERMES_"))}
    env.update(HERMES_ENV="dev", DATABASE_URL=f"sqlite:///{tmp_path / 'hermes.sqlite3'}")
    return env


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a process group")
def test_run_serves_the_platform_on_embedded_defaults_and_stops_cleanly(tmp_path: Path, free_port: int) -> None:
    env = _embedded_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{free_port}/api/v1/health/live", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.3)
        assert status == 200, "".join(lines)
        while time.monotonic() < deadline and not any("celery@" in line and "ready" in line for line in lines):
            time.sleep(0.3)
        _use_the_platform(f"http://127.0.0.1:{free_port}", env)
        # A worker that dies (kombu can end it for good when Redis restarts under a job) is started again.
        worker = _child_running(proc.pid, b"worker")
        os.kill(worker, signal.SIGKILL)
        while time.monotonic() < deadline and not any("the worker exited" in line for line in lines):
            time.sleep(0.3)
        assert _child_running(proc.pid, b"worker", timeout=30) != worker, "".join(lines)
        _use_the_platform(f"http://127.0.0.1:{free_port}", env)  # and runs tasks again
        running = _start_slow_task(f"http://127.0.0.1:{free_port}", env)  # Ctrl-C comes while it runs
    finally:
        started = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(timeout=60)
        reader.join(timeout=5)
    output = "".join(lines)
    assert "demo login: demo@hermes.local / hermes-demo" in output
    assert f"Hermes is running: http://127.0.0.1:{free_port}/" in output
    assert "embedded Redis at redis://127.0.0.1:" in output
    assert "REDIS_URL is not set" not in output  # printed by every process, right under "redis ok (embedded)"
    assert "beat" in output and "ready" in output, output
    assert proc.returncode == 0, output
    # Nothing it started survives (the servers run in sessions of their own, so not the process group: every
    # process below it); children may take a moment to be reaped.
    assert len(started) >= 4, started  # web, worker (and its pool), beat, the embedded Redis
    gone_by = time.monotonic() + 20
    while time.monotonic() < gone_by and _alive(started):
        time.sleep(0.2)
    assert not _alive(started)
    # The embedded Redis runs in a session of its own (Ctrl-C killed it before the worker had acknowledged its
    # job: "Couldn't ack" tracebacks); it is stopped last, and stopped all the same.
    assert "Couldn't ack" not in output
    # The worker stopped first and finished the task while the web still served the demo agent: the web and the
    # worker stopped together cut its stream, and the retry was lost with the embedded Redis.
    assert _task_state(running, env) == "completed", output
    redis_port = int(output.split("embedded Redis at redis://127.0.0.1:", 1)[1].split("/", 1)[0])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", redis_port))


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid, or None when it is gone."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> list[bytes]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile
        return []


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (stat := _stat(pid)) is not None and stat[0] != "Z"}


def _descendants(root: int) -> set[int]:
    """Every live process below `root` (children, grandchildren…)."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    parents = {pid: stat[1] for pid in pids if (stat := _stat(pid))}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return _alive(found)


def _child_running(run: int, role: bytes, timeout: float = 5.0) -> int:
    """The pid of the process `make run` (pid `run`) started whose command line names `role` (the Celery worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _descendants(run):
            argv = _cmdline(pid)
            if b"celery" in b" ".join(argv) and role in argv and (stat := _stat(pid)) and stat[1] == run:
                return pid
        time.sleep(0.3)
    raise AssertionError(f"no {role.decode()} running")


def test_an_unreachable_database_is_one_line(tmp_path: Path, free_port: int) -> None:
    env = {**_embedded_env(tmp_path), "DATABASE_URL": "postgres://postgres@127.0.0.1:9/hermes"}
    run = subprocess.run(
        [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("hermes: manage.py migrate failed: ") and "Connection refused" in error, run.stderr
    assert error.endswith("`python manage.py doctor` checks the configuration and says how to fix it.")


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, free_port: int) -> None:
    env = _embedded_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        run = subprocess.run(
            [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 1
    assert f"cannot serve on 127.0.0.1:{free_port}" in run.stderr and f"HERMES_PORT={free_port + 1}" in run.stderr
    assert "Hermes is running" not in run.stdout and not (tmp_path / "hermes.sqlite3").exists()  # nothing started


_MAKE_KEY = """
from apps.core.permissions import Access
from apps.orgs.actions import create_api_key
from apps.orgs.models import Membership, Organization
org = Organization.objects.get(slug="demo")
member = Membership.objects.for_org(org).get()
access = Access(org=org, role=member.role, user=member.user)
scopes = ["agents:read", "tasks:read", "tasks:write", "federation:read", "federation:write", "org:admin"]
print(create_api_key(access=access, name="run test", scopes=scopes).plaintext)
"""


def _use_the_platform(base: str, env: dict[str, str]) -> None:
    """What a first user of `make run` does, on SQLite: an API key used more than once (its last-used stamp is
    read back), a task on a demo agent, and a task on the partner org's agent over federation."""
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _MAKE_KEY],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as api:
        for _ in range(2):
            # No proxy is trusted (HERMES_TRUSTED_PROXIES is empty): a client's own X-Forwarded-For names nobody.
            agents = api.get("/api/v1/agents", headers={"X-Forwarded-For": "203.0.113.7"})
            assert agents.status_code == 200, agents.text
        plaintext = headers["Authorization"].removeprefix("Bearer ")
        keys = api.get("/api/v1/keys").json()["results"]
        (key,) = [
            k for k in keys if k["name"] == "run test" and plaintext.endswith(k["last_four"]) and k["last_used_ip"]
        ]
        assert key["last_used_ip"] == "127.0.0.1", key
        echo = next(a for a in agents.json()["results"] if a["slug"] == "demo-echo")
        local = api.post("/api/v1/tasks", json={"agent": echo["id"], "input": {"parts": [{"text": "hi"}]}})
        assert local.status_code == 202, local.text
        remote = api.post(
            "/api/v1/federation/remote-tasks",
            json={"agent": "demo-echo.partner", "message": {"parts": [{"text": "hi partner"}]}},
        )
        assert remote.status_code == 202, remote.text
        for task_id in (local.json()["id"], remote.json()["task_id"]):
            deadline = time.monotonic() + 60
            while (state := api.get(f"/api/v1/tasks/{task_id}").json()["status"]) != "completed":
                assert time.monotonic() < deadline, f"task {task_id} is still {state}"
                time.sleep(0.3)


def _start_slow_task(base: str, env: dict[str, str]) -> str:
    """A task on the demo `slow` agent (4 steps of 1 s), once it is running; its id."""
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _MAKE_KEY],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as api:
        slow = next(a for a in api.get("/api/v1/agents").json()["results"] if a["slug"] == "demo-slow")
        sent = api.post("/api/v1/tasks", json={"agent": slow["id"], "input": {"parts": [{"text": "take 4 s"}]}})
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 30
        while (state := api.get(f"/api/v1/tasks/{sent.json()['id']}").json()["status"]) != "working":
            assert time.monotonic() < deadline and state == "submitted", state
            time.sleep(0.1)
    return str(sent.json()["id"])


def _task_state(task_id: str, env: dict[str, str]) -> str:
    """A task's state as its row says, read with the servers stopped."""
    read = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         f"from apps.tasks.models import Task; print(Task.objects.unscoped('test').get(id='{task_id}').state)"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return read.stdout.strip().splitlines()[-1]


def test_a_malformed_port_is_refused_in_words(tmp_path: Path) -> None:
    env = {**_embedded_env(tmp_path), "HERMES_PORT": "abc"}
    run = subprocess.run(
        [sys.executable, "-m", "hermes_site.run"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "the port (--port or HERMES_PORT) must be from 1 to 65535, not 'abc'" in run.stderr


def test_an_address_that_is_not_this_machines_is_named_not_blamed_on_the_port(tmp_path: Path, free_port: int) -> None:
    """ "Cannot assign requested address. Stop what uses it (another `make run`?), or pick another port" sent the
    operator after the port; the address is what is wrong."""
    env = {**_embedded_env(tmp_path), "HERMES_HOST": "192.0.2.1", "HERMES_PORT": str(free_port)}  # TEST-NET-1
    run = subprocess.run(
        [sys.executable, "-m", "hermes_site.run"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"hermes: cannot serve on 192.0.2.1:{free_port}: ")
    assert "192.0.2.1 is not an address of this machine" in line and "HERMES_HOST=127.0.0.1" in line
    assert "another port" not in line and "HERMES_PORT" not in line


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a process group")
def test_ctrl_c_during_the_first_migrate_stops_quietly(tmp_path: Path, free_port: int) -> None:
    """It printed "manage.py migrate failed: KeyboardInterrupt. `python manage.py doctor` checks…" and exited 1."""
    with socket.socket() as silent_postgres:  # accepts the connection and never answers: migrate waits on it
        silent_postgres.bind(("127.0.0.1", 0))
        silent_postgres.listen()
        silent_postgres.settimeout(90)
        env = {
            **_embedded_env(tmp_path),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{silent_postgres.getsockname()[1]}/hermes",
            **({"REDIS_URL": os.environ["REDIS_URL"]} if os.environ.get("REDIS_URL") else {}),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            connection, _ = silent_postgres.accept()  # `manage.py migrate` is connecting
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            _, stderr = proc.communicate(timeout=60)
            connection.close()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130, stderr
    assert "failed" not in stderr and "Traceback" not in stderr and "doctor" not in stderr, stderr


def _start_run(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hermes_site.run", "--port", str(port)],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _web_started(run: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until `make run` has started its web server (a uvicorn child), not until that answers."""
    deadline = time.monotonic() + timeout
    while not any(b"uvicorn" in _cmdline(pid) for pid in _descendants(run.pid)):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
        time.sleep(0.05)


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a process group")
def test_ctrl_c_while_the_servers_start_stops_quietly_without_a_banner(tmp_path: Path, free_port: int) -> None:
    """Ctrl-C about 4 s in printed KeyboardInterrupt tracebacks from worker, beat and web, "hermes asgi: failed to
    start: KeyboardInterrupt", and then the banner "Hermes is running" all the same."""
    run = _start_run(_embedded_env(tmp_path), free_port)
    try:
        _web_started(run)
        started = _descendants(run.pid)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130, output
    for noise in ("Hermes is running", "Traceback", "KeyboardInterrupt", "failed to start", "exited"):
        assert noise not in output, output
    gone_by = time.monotonic() + 20
    while time.monotonic() < gone_by and _alive(started):
        time.sleep(0.2)
    assert not _alive(started), output


def test_waiting_for_the_web_ends_when_it_exits_or_the_run_stops(free_port: int) -> None:
    """It returned silently when the web had exited, and the banner followed."""
    from hermes_site.run import _wait_until_serving

    url = f"http://127.0.0.1:{free_port}/api/v1/health/live"  # nothing listens there
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert _wait_until_serving(url, exited, lambda: False) is False
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        began = time.monotonic()
        assert _wait_until_serving(url, sleeping, lambda: True) is False
        assert time.monotonic() - began < 5
    finally:
        sleeping.kill()
        sleeping.wait()


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a process group")
def test_a_second_run_on_the_embedded_default_is_refused_in_one_line(tmp_path: Path, free_port: int) -> None:
    """A second `make run` (another HERMES_PORT) reused the first one's embedded Redis and SQLite file; Ctrl-C on
    the first stopped that Redis and broke the second for good."""
    env = _embedded_env(tmp_path)
    first = _start_run(env, free_port)
    try:
        _web_started(first)  # well past taking the lock (before the embedded Redis starts)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            other_port = sock.getsockname()[1]
        second = subprocess.run(
            [sys.executable, "-m", "hermes_site.run", "--port", str(other_port)],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=60)
    assert second.returncode == 1, second.stderr
    errors = second.stderr.strip().splitlines()
    assert len(errors) == 1, second.stderr
    (line,) = errors
    assert line.startswith(
        f"hermes: another `make run` (pid {first.pid}, http://127.0.0.1:{free_port}/) already uses this checkout's "
        "embedded database and Redis"
    ), line
    assert f"`kill {first.pid}`" in line and "DATABASE_URL and REDIS_URL" in line
    assert "embedded Redis at" not in second.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_servers_of_a_killed_run_stop_with_it(tmp_path: Path, free_port: int) -> None:
    """SIGKILL on `make run` (the OOM killer, `kill -9`) left web, worker, beat and the embedded Redis running under
    PID 1, in sessions of their own; a second run on another port then started a second worker and beat."""
    run = _start_run(_embedded_env(tmp_path), free_port)
    servers: set[int] = set()
    redis: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(servers) < 3:
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
            children = {pid: _cmdline(pid) for pid in _descendants(run.pid) if (_stat(pid) or ("", 0))[1] == run.pid}
            servers = {pid for pid, argv in children.items() if {b"uvicorn", b"worker", b"beat"} & set(argv)}
            redis = {pid for pid, argv in children.items() if any(b"redis-server" in part for part in argv)}
            time.sleep(0.1)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)  # not communicate(): the servers hold its output pipe open while they live
        gone_by = time.monotonic() + 30
        while time.monotonic() < gone_by and _alive(servers | redis):
            time.sleep(0.2)
        assert redis, "the embedded Redis was not seen"
        assert not _alive(servers | redis), [b" ".join(_cmdline(pid)) for pid in _alive(servers | redis)]
    finally:
        for pid in _alive(servers | redis):
            os.kill(pid, signal.SIGKILL)
        # What stop_redis does at the end of a run: its URL file would send later commands to the dead server.
        pid_file = REDIS_DIR / "redis.pid"
        if redis and pid_file.exists() and pid_file.read_text().strip() in {str(pid) for pid in redis}:
            for name in ("url", "redis.pid"):
                (REDIS_DIR / name).unlink(missing_ok=True)
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=30)


@pytest.mark.skipif(os.name == "nt", reason="Windows children do not inherit the lock")
def test_the_servers_hold_the_checkout_lock_while_they_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server outliving its run (killed where there is no PR_SET_PDEATHSIG, or still stopping) keeps a second
    run off the embedded default, and the refusal says the run was killed rather than `kill <a dead pid>`."""
    from hermes_site import run

    monkeypatch.setattr(run, "LOCK_FILE", tmp_path / "run.lock")
    monkeypatch.setattr(run, "_lock_fd", None)
    run._lock_checkout("http://127.0.0.1:8000/")
    server = run._start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert run._lock_fd is not None
        os.close(run._lock_fd)  # as the kernel does when the run is killed
        with pytest.raises(run.CheckoutBusy, match=rf"another `make run` \(pid {os.getpid()}, "):
            run._lock_checkout("http://127.0.0.1:8001/")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (tmp_path / "run.lock").write_text(f"{dead.pid} http://127.0.0.1:8000/\n")
        with pytest.raises(run.CheckoutBusy) as refused:
            run._lock_checkout("http://127.0.0.1:8001/")
        assert str(refused.value).startswith(
            f"the servers of a `make run` that was killed (pid {dead.pid}, http://127.0.0.1:8000/) still hold"
        )
    finally:
        server.kill()
        server.wait()
    run._lock_checkout("http://127.0.0.1:8001/")  # free once the last server is gone
    assert run._lock_fd is not None
    os.close(run._lock_fd)


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a process group")
def test_the_banner_says_what_is_not_ready(tmp_path: Path, free_port: int) -> None:
    """ "Hermes is running" alone, with Redis and the broker down: the first page that needed them failed later."""
    with socket.socket() as sock:  # a port nothing listens on: a Redis that is down
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    run = _start_run({**_embedded_env(tmp_path), "REDIS_URL": dead}, free_port)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(run.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("Ctrl-C stops" in line for line in lines):
            assert run.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=60)
        reader.join(timeout=5)
    output = "".join(lines)
    assert f"Hermes is running: http://127.0.0.1:{free_port}/\n  NOT READY: redis, broker down; " in output, output


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt" or not _ipv6_loopback(), reason="SIGINT to a process group; needs ::1")
def test_a_wildcard_bind_prints_urls_that_work_and_answers_this_machines_names(tmp_path: Path, free_port: int) -> None:
    """HERMES_HOST=:: (IPv6-only, as uvicorn binds it) waited on 127.0.0.1 and gave up; HERMES_HOST=::1 built
    HERMES_PUBLIC_URL=http://::1:PORT, refused. HERMES_HOST=0.0.0.0 printed http://0.0.0.0:PORT/, and that URL and
    every other machine's request got 400 DisallowedHost: ALLOWED_HOSTS named loopback only."""
    env = {k: v for k, v in _embedded_env(tmp_path).items() if k != "ALLOWED_HOSTS"}
    run = subprocess.Popen(
        [sys.executable, "-m", "hermes_site.run", "--host", "::", "--port", str(free_port)],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(run.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("Ctrl-C stops" in line for line in lines):
            assert run.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        base = f"http://[::1]:{free_port}"
        name = socket.gethostname()
        answers = {host: httpx.get(f"{base}/accounts/login/", headers={"Host": f"{host}:{free_port}"}).status_code
                   for host in (name, "[::1]", "evil.example")}  # fmt: skip
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=60)
        reader.join(timeout=5)
    output = "".join(lines)
    assert f"Hermes is running: {base}/\n" in output and f"health: {base}/api/v1/health/live" in output, output
    assert "listening on every IPv6 interface (::); from other machines: " in output, output
    assert "0.0.0.0" not in output and "http://[::]" not in output.split("Hermes is running", 1)[1]
    assert answers["[::1]"] == 200 and answers["evil.example"] == 400, answers  # still a list, not "*"
    if name.split(".")[0] != "localhost":
        assert answers[name] == 200, answers
        assert f"http://{name}:{free_port}/" in output


def test_urls_bracket_ipv6_and_lan_hosts_name_this_machine() -> None:
    from hermes_site.run import _elsewhere, _http_url, _is_loopback, _lan_hosts

    assert _http_url("::1", 8000) == "http://[::1]:8000" and _http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert _is_loopback("::1") and _is_loopback("127.0.0.2") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.0.2.5") and not _is_loopback("vm")
    assert _elsewhere("127.0.0.1", 8000, []) == ""
    hosts = _lan_hosts("192.0.2.5")
    assert "192.0.2.5" in hosts and "localhost" not in hosts
    wildcard = _lan_hosts("0.0.0.0")
    assert all(":" not in host for host in wildcard)  # IPv4 only: `0.0.0.0` serves no IPv6 address
    assert not {"127.0.0.1", "0.0.0.0", "localhost"} & set(wildcard), wildcard
    if socket.gethostname().split(".")[0] != "localhost":
        assert socket.gethostname() in wildcard
    assert _elsewhere("0.0.0.0", 8000, ["vm", "192.0.2.5"]) == (
        "  listening on every IPv4 interface (0.0.0.0); from other machines: http://vm:8000/ http://192.0.2.5:8000/\n"
    )
    assert "[fd00::5]" in _lan_hosts("fd00::5") and "http://[fd00::5]:8000/" in _elsewhere("::", 8000, ["[fd00::5]"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_started_by_make_stops_when_make_is_killed(tmp_path: Path, free_port: int) -> None:
    """`kill -9` on the `make run` process (make) left the orchestrator and everything under it running under
    PID 1, serving; only the orchestrator itself had its servers stop with it."""
    run = [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)]
    make = subprocess.Popen(  # stands for make: it starts the run (MAKELEVEL set, as make sets it) and waits
        [sys.executable, "-c", f"import subprocess, sys; sys.exit(subprocess.call({run!r}))"],
        cwd=BASE_DIR, env={**_embedded_env(tmp_path), "MAKELEVEL": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not any(b"uvicorn" in _cmdline(pid) for pid in started):
            assert make.poll() is None and time.monotonic() < deadline
            started = _descendants(make.pid)
            time.sleep(0.1)
        time.sleep(0.5)  # the worker and beat too
        started = _descendants(make.pid)
        os.kill(make.pid, signal.SIGKILL)
        make.wait()
        gone_by = time.monotonic() + 60
        while time.monotonic() < gone_by and _alive(started):
            time.sleep(0.2)
        assert not _alive(started), [b" ".join(_cmdline(pid)) for pid in _alive(started)]
    finally:
        for pid in _alive(started):
            os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
            make.wait()
