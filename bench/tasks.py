"""Tasks benchmarks (`make bench`): submit throughput, submit → completed latency, event → websocket latency.

Each figure is measured next to its baseline in the same run, against real servers on loopback: gunicorn (2 sync
workers, as in the Procfile) for HTTP, uvicorn (one worker) for websockets and the demo agents, one Celery worker,
Postgres and Redis from DATABASE_URL/REDIS_URL. The benchmark works in an org of its own and deletes its tasks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 32
LOAD_SECONDS = 8.0
LATENCY_RUNS = 30
SUBSCRIBERS = 500
EVENTS = 40
EVENT_RATE = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def _serve(args: list[str], env: dict[str, str], ready_url: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    import httpx

    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while ready_url:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[2:4]} did not start")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _setup() -> tuple[Any, Any, str]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from apps.core.permissions import Access
    from apps.orgs.actions import create_api_key
    from apps.orgs.models import Membership, Organization, Plan

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_row (id bigserial PRIMARY KEY, body text NOT NULL)")
    org, _ = Organization.objects.get_or_create(slug="bench-tasks", defaults={"name": "Bench tasks"})
    Organization.objects.filter(pk=org.pk).update(plan=Plan.ENTERPRISE)
    org.refresh_from_db()
    user, _ = get_user_model().objects.get_or_create(email="bench-tasks@bench.test", defaults={"name": "Bench"})
    Membership.objects.get_or_create(organization=org, user=user, defaults={"role": "owner"})
    access = Access(org=org, role="owner", user=user)
    key = create_api_key(access=access, name=f"bench {uuid.uuid4().hex[:6]}", scopes=["tasks:read", "tasks:write"])
    return org, user, key.plaintext


# Processes a load test keeps busy, by what their command line contains; the benchmark process itself is the
# load generator.
CPU_ROLES = (("gunicorn", "server"), ("postgres", "Postgres"), ("redis-server", "Redis"))
GENERATOR = "load generator"


@dataclass
class Load:
    rate: float  # successful requests per second
    errors: int
    cpu_ms: dict[str, float]  # CPU milliseconds per successful request, by role (plus "total")


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid → (role, user + system clock ticks so far) for the processes of CPU_ROLES and this one (Linux /proc)."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        pid = int(entry.name)
        role = GENERATOR if pid == os.getpid() else next((r for k, r in CPU_ROLES if k.encode() in cmdline), None)
        if role:
            ticks[pid] = (role, int(stat[11]) + int(stat[12]))
    return ticks


async def _load(url: str, body: dict[str, Any], headers: dict[str, str]) -> Load:
    """CLIENTS concurrent clients posting in a loop for LOAD_SECONDS, and the CPU each role spent meanwhile."""
    import httpx

    done, errors = 0, 0
    stop = time.monotonic() + LOAD_SECONDS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one() -> None:
            nonlocal done, errors
            while time.monotonic() < stop:
                response = await client.post(url, json=body)
                if response.status_code == 202:
                    done += 1
                else:
                    errors += 1

        before = _cpu_ticks()
        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(CLIENTS)))
        elapsed = time.monotonic() - started
        after = _cpu_ticks()
    cpu = dict.fromkeys([role for _, role in CPU_ROLES] + [GENERATOR], 0.0)
    ms_per_tick = 1000 / os.sysconf("SC_CLK_TCK")
    for pid, (role, ticks) in after.items():
        # A process that started during the load (a new Postgres backend) counts from zero.
        cpu[role] += (ticks - before.get(pid, (role, 0))[1]) * ms_per_tick / max(done, 1)
    cpu["total"] = sum(cpu.values())
    return Load(done / elapsed, errors, cpu)


def _server_env(queue: str) -> dict[str, str]:
    """The servers' environment: production-like (no DEBUG query log, no INFO log line per request), their jobs
    on a queue of their own."""
    return {
        **os.environ,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "DEBUG": "false",
        "HERMES_SSRF_ALLOWLIST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def _purge(queue: str) -> None:
    """Drop the load test's run messages left on the benchmark's own queue (their tasks are deleted)."""
    from hermes_site.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def _throughput(env: dict[str, str], agent: Any, key: str, path: str = "/api/v1/tasks") -> tuple[Load, Load]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "bench._tasks_app:wsgi_application",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    with _serve(args, {**env, "HERMES_BENCH_SERVER": "wsgi"}, f"{base}/api/v1/health/live"):
        asyncio.run(_load(f"{base}/bench/bare-insert", {"warm": True}, {}))  # warm both paths once
        bare = asyncio.run(_load(f"{base}/bench/bare-insert", {"input": "hello"}, {}))
        body = {"agent": str(agent.pk), "input": {"parts": [{"text": "hello"}]}}
        tasks = asyncio.run(_load(f"{base}{path}", body, {"Authorization": f"Bearer {key}"}))
    return bare, tasks


def _agent_own_times(agent: Any) -> list[float]:
    from apps.agents.client import AgentClient, AgentTarget, iterate_sync

    target = AgentTarget.from_agent(agent)
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        for update in iterate_sync(lambda: AgentClient(target).run_once(text="hello")):
            if update.terminal:
                break
        times.append((time.perf_counter() - started) * 1000)
    return times


def _hermes_times(base: str, agent: Any, key: str) -> list[float]:
    import httpx

    from apps.tasks.models import Task

    times = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(LATENCY_RUNS):
            body = {"agent": str(agent.pk), "input": {"parts": [{"text": "hello"}]}}
            task_id = client.post("/api/v1/tasks", json=body).json()["id"]
            deadline = time.monotonic() + 30
            while True:
                task = Task.objects.unscoped("bench").get(pk=task_id)
                if task.is_terminal or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            assert task.state == "completed", task.last_error
            # Server-side timestamps: the accepted INSERT to the committed `completed` transition.
            times.append((task.finished_at - task.created_at).total_seconds() * 1000)
    return times


async def _fanout(ws_base: str, path: str, publish: Any, *, synced: bool) -> tuple[list[float], int]:
    """SUBSCRIBERS sockets on `path`; `publish(i)` sends event i (stamped with time.time()); returns latencies and
    how many (subscriber, event) pairs never arrived. With `synced`, a socket is ready once it says so."""
    import websockets

    latencies: list[float] = []
    missing = 0
    ready = 0
    all_ready = asyncio.Event()
    gate = asyncio.Semaphore(50)

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready == SUBSCRIBERS:
            all_ready.set()

    async def subscriber() -> None:
        nonlocal missing
        async with gate:
            ws = await websockets.connect(ws_base + path, open_timeout=60, max_queue=None)
        if not synced:
            one_ready()
        seen: set[int] = set()
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "synced":
                    one_ready()
                elif frame.get("type") == "event" and "t" in frame["event"].get("data", {}):
                    data = frame["event"]["data"]
                    latencies.append((time.time() - data["t"]) * 1000)
                    seen.add(data["i"])
                    if data["i"] == EVENTS - 1:
                        break
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        finally:
            missing += EVENTS - len(seen)
            await ws.close()

    tasks = [asyncio.create_task(subscriber()) for _ in range(SUBSCRIBERS)]
    await asyncio.wait_for(all_ready.wait(), timeout=180)
    await asyncio.sleep(1.0)  # let the join announcements settle before timing
    for i in range(EVENTS):
        await asyncio.to_thread(publish, i)
        await asyncio.sleep(1 / EVENT_RATE)
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
    return latencies, missing


def run() -> str:
    load_before = os.getloadavg()[0]
    org, _user, key = _setup()
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.conf import settings

    from apps.agents.actions import register_agent_by_url
    from apps.tasks import actions
    from apps.tasks.models import Task

    queue = f"hermes-bench-{uuid.uuid4().hex[:8]}"
    env = _server_env(queue)
    settings.HERMES_SSRF_ALLOWLIST = [*settings.HERMES_SSRF_ALLOWLIST, "127.0.0.1"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    asgi_env = {**env, "HERMES_BENCH_SERVER": "asgi", "HERMES_PUBLIC_URL": base}
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench._tasks_app:asgi_application",
        "--port",
        str(port),
        "--no-access-log",
        "--ws-per-message-deflate",  # as in the Procfile
        "false",
        "--log-level",
        "warning",
    ]
    worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hermes_site",
        "worker",
        "-P",
        "threads",
        "-c",
        "4",
        "-Q",
        queue,
        "-l",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    try:
        with _serve(uvicorn, asgi_env, f"{base}/api/v1/health/live"):
            settings.HERMES_PUBLIC_URL = base
            agent = register_agent_by_url(org=org, url=f"{base}/demo-agents/echo/", slug=f"echo-{port}")
            bare, submit = _throughput(env, agent, key)
            # Drop the load test's queued tasks before any worker runs (deleting them under a running worker
            # races with its event inserts); their broker messages then find no row, which is harmless.
            Task.objects.unscoped("bench").filter(organization=org).delete()
            with _serve(worker, env):
                time.sleep(3)  # the worker connects to the broker
                own = _agent_own_times(agent)
                hermes = _hermes_times(base, agent, key)

            task = actions.create_task(org=org, agent=agent, message={"parts": [{"text": "fan-out"}]})
            ws_base = base.replace("http://", "ws://")

            def publish_event(i: int) -> None:
                data = {"i": i, "t": time.time()}
                actions.record(task, [actions.Observation(kind="progress", data=data)])

            layer = get_channel_layer()

            def publish_bare(i: int) -> None:
                event = {"seq": i + 1, "kind": "progress", "data": {"i": i, "t": time.time()}}
                async_to_sync(layer.group_send)("bench-fanout", {"type": "bench.event", "event": event})

            path = f"/ws/tasks/{task.pk}/?api_key={key}"
            lat, missing = asyncio.run(_fanout(ws_base, path, publish_event, synced=True))
            bare_lat, bare_missing = asyncio.run(_fanout(ws_base, "/ws/bench/fanout/", publish_bare, synced=False))
    finally:
        Task.objects.unscoped("bench cleanup").filter(organization=org).delete()
        _purge(queue)
    load_after = os.getloadavg()[0]
    own_p50, hermes_p50 = statistics.median(own), statistics.median(hermes)
    ratio = submit.rate / bare.rate if bare.rate else 0.0
    p95, bare_p95 = _pct(lat, 0.95), _pct(bare_lat, 0.95)
    lines = [
        "## Tasks (bench/tasks.py)",
        "",
        "Servers on loopback: gunicorn with 2 sync workers (HTTP), one uvicorn worker (websockets and the demo",
        "agents), one Celery worker (4 threads); Postgres and Redis share the same 2 cores with the load generator.",
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after (2 cores; compare each row's",
        "columns: both sides of a row were measured in the same run on the same machine).",
        "",
        "| Measure | Hermes | Baseline | Target | Result |",
        "| --- | --- | --- | --- | --- |",
        f"| Submit throughput, {CLIENTS} concurrent clients, `POST /api/v1/tasks` (API key, scope, quota, 202 + "
        f"enqueue) | {submit.rate:.0f} req/s ({submit.errors} errors) | bare DRF view inserting one row: "
        f"{bare.rate:.0f} req/s "
        f"| >= 1/2 of baseline | {ratio:.2f}x of baseline: {'met' if ratio >= 0.5 else 'NOT met'} |",
        f"| Submit -> completed, echo demo agent, p50 of {LATENCY_RUNS} | {hermes_p50:.1f} ms "
        f"(p95 {_pct(hermes, 0.95):.1f} ms) | the agent's own time (same A2A call from a client): {own_p50:.1f} ms "
        f"| p50 within 50 ms | +{hermes_p50 - own_p50:.1f} ms: {'met' if hermes_p50 - own_p50 <= 50 else 'NOT met'} |",
        f"| Event -> websocket, {SUBSCRIBERS} subscribers on one task, {EVENT_RATE:g} events/s, p95 "
        f"| {p95:.1f} ms (p50 {statistics.median(lat):.1f} ms), {missing} missing "
        f"| bare Channels consumer, same messages: {bare_p95:.1f} ms (p50 {statistics.median(bare_lat):.1f} ms), "
        f"{bare_missing} missing | p95 < 100 ms, nothing missing "
        f"| {'met' if p95 < 100 and missing == 0 else 'NOT met'} |",
        "",
        "Submit -> completed is measured with server timestamps (the task's INSERT to its committed `completed`",
        "transition); the agent's own time is a full A2A streaming call to the same agent from the benchmark process.",
        "Event -> websocket: the event is recorded through `apps.tasks.actions.record` (row lock, INSERT, commit, then",
        "the channel-layer broadcast) and timed until each subscriber has parsed it; the baseline publishes the same",
        "payload straight to the channel layer.",
        "",
        "CPU per request during the throughput runs (user + system time of each process from /proc, divided by the",
        "requests served). Server, database, Redis and load generator share the two cores, so the throughput ratio",
        "follows the ratio of the totals:",
        "",
        *_cpu_table([("bare insert", bare), ("task submit", submit)]),
    ]
    return "\n".join(lines)


def _cpu_table(rows: list[tuple[str, Load]]) -> list[str]:
    roles = [role for _, role in CPU_ROLES] + [GENERATOR, "total"]
    table = ["| CPU per request | " + " | ".join(roles) + " |", "| --- |" + " --- |" * len(roles)]
    for label, load in rows:
        table.append(f"| {label} | " + " | ".join(f"{load.cpu_ms[role]:.2f} ms" for role in roles) + " |")
    return table


# What each part of the submit path costs under load: `python -m bench.tasks --ablation` (not part of `make bench`;
# its table is quoted in docs/tasks.md). Every row runs its own server, with its own bare baseline.
ABLATIONS = [
    ("", "as shipped"),
    ("enqueue,broadcast", "without the Celery publish and the org-stream broadcast"),
    ("audit", "without the audit row"),
    ("quota", "without the two Redis quota counters"),
    ("enqueue,broadcast,audit,quota", "without all four"),
]
# No task at all: the bare insert behind the API key, scope and request-quota checks every API request passes.
KEYED_INSERT = ("/bench/keyed-insert", "no task: API key + scope + request quota, then the bare insert")


def ablation() -> str:
    org, _user, key = _setup()
    from apps.agents.actions import assign_demo_agents
    from apps.agents.models import Agent
    from apps.tasks.models import Task

    assign_demo_agents(org=org)  # the submit path never calls the agent: no worker runs in this benchmark
    agent = Agent.objects.for_org(org).get(slug="demo-echo")
    queue = f"hermes-bench-{uuid.uuid4().hex[:8]}"
    lines = [
        f"Submit throughput with parts of the path switched off ({CLIENTS} clients, gunicorn 2 sync workers, "
        f"{LOAD_SECONDS:g} s per side; load average {os.getloadavg()[0]:.1f} before).",
        "",
        "| Variant | POST (the submit, or the keyed insert) | Bare insert, same server | Ratio |",
        "| --- | --- | --- | --- |",
    ]
    try:
        variants = [(parts, label, "/api/v1/tasks") for parts, label in ABLATIONS] + [
            ("", KEYED_INSERT[1], KEYED_INSERT[0])
        ]
        for parts, label, path in variants:
            env = {**_server_env(queue), "HERMES_BENCH_WITHOUT": parts}
            bare, submit = _throughput(env, agent, key, path)
            Task.objects.unscoped("bench cleanup").filter(organization=org).delete()
            failed = f", {submit.errors} errors" if submit.errors else ""
            lines.append(
                f"| {label} | {submit.rate:.0f} req/s{failed} ({submit.cpu_ms['total']:.1f} ms CPU) "
                f"| {bare.rate:.0f} req/s ({bare.cpu_ms['total']:.1f} ms CPU) | {submit.rate / bare.rate:.2f} |"
            )
    finally:
        Task.objects.unscoped("bench cleanup").filter(organization=org).delete()
        _purge(queue)
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] != ["--ablation"]:
        raise SystemExit("usage: python -m bench.tasks --ablation   (the benchmarks themselves: make bench)")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # as `make bench`: no INFO line per request from the generator
    print(ablation())
