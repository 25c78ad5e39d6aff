from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from apps.core.checks import Probe, health_report, register_probe
from apps.ops.tasks import BEAT_KEY, beat_heartbeat
from apps.ops.tests.conftest import WorkerProcess
from apps.ops.worker import seen_workers
from hermes_site.embedded import start_redis, stop_redis

pytestmark = pytest.mark.django_db


def _redis_settings(url: str) -> Any:
    return override_settings(REDIS_URL=url, CELERY_BROKER_URL=url)


def test_readiness_is_200_when_everything_is_up(client: Client) -> None:
    response = client.get("/api/v1/health/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "failing": [],
        "checks": {"database": "ok", "redis": "ok", "broker": "ok"},
    }


def test_readiness_turns_503_when_redis_stops_and_200_when_it_returns(client: Client, tmp_path: Path) -> None:
    url, proc = start_redis(directory=tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with _redis_settings(url):
        assert client.get("/api/v1/health/ready").status_code == 200
        stop_redis(proc, directory=tmp_path)
        response = client.get("/api/v1/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["failing"] == ["redis", "broker"]
        assert body["checks"]["database"] == "ok"
        url, proc = start_redis(port=port, directory=tmp_path)
        try:
            assert client.get("/api/v1/health/ready").status_code == 200
        finally:
            stop_redis(proc, directory=tmp_path)


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """call() in a thread; fail the test (instead of hanging it) when it is still blocked after `seconds`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_hung_redis_costs_probes_and_publishes_seconds_not_forever(client: Client, tmp_path: Path) -> None:
    """A Redis that accepts connections but never answers (overloaded, or a partition that drops packets) is
    worse than a stopped one: without socket timeouts every probe and every publish waits on it forever."""
    from hermes_site.celery import app as celery_app

    url, proc = start_redis(directory=tmp_path)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with _redis_settings(url):
            response = _within(5, lambda: client.get("/api/v1/health/ready"))
            assert response.status_code == 503 and response.json()["failing"] == ["redis", "broker"]

            def publish() -> None:
                # A run message, published with the app's transport options and retry policy: it fails within
                # seconds (the caller logs it; the sweeper re-dispatches from the row).
                with celery_app.connection_for_write(url) as connection:
                    celery_app.send_task("apps.tasks.tasks.run_task", args=["x"], connection=connection)

            with pytest.raises(Exception, match="Timeout"):
                _within(8, publish)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop_redis(proc, directory=tmp_path)


def test_readiness_names_unapplied_migrations(client: Client) -> None:
    from django.db import connection

    from apps.core.checks import forget_migration_state

    forget_migration_state()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
    try:
        response = client.get("/api/v1/health/ready")
        assert response.status_code == 503 and response.json()["failing"] == ["database"]
    finally:
        forget_migration_state()


def test_a_not_ready_probe_is_a_warning_not_an_error(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Every readiness probe of a pod that was not ready logged an ERROR: 720 lines an hour under a k8s probe."""
    from django.db import connection

    from apps.core.checks import forget_migration_state

    forget_migration_state()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
    try:
        with caplog.at_level(logging.INFO, logger="hermes.probes"):
            assert client.get("/api/v1/health/ready").status_code == 503
    finally:
        forget_migration_state()
    (record,) = [r for r in caplog.records if r.name == "hermes.probes"]
    assert record.levelno == logging.WARNING and record.getMessage() == "GET /api/v1/health/ready 503"


@override_settings(METRICS_TOKEN="s3cret-token")
@pytest.mark.parametrize("path", ["/api/v1/health/live", "/api/v1/health/ready", "/metrics"])
def test_probes_answer_head_like_get_without_a_body(client: Client, path: str) -> None:
    """HEAD (load balancers, uptime checks) was 405."""
    auth = {"HTTP_AUTHORIZATION": "Bearer s3cret-token"}
    get, head = client.get(path, **auth), client.head(path, **auth)
    assert head.status_code == get.status_code == 200, head.content
    assert head["Content-Type"] == get["Content-Type"] and head.content == b"" and get.content


@override_settings(METRICS_TOKEN="s3cret-token", METRICS_ALLOWED_IPS=["10.9.0.0/16"])
def test_breakdown_is_for_operators_only(client: Client, django_user_model: Any) -> None:
    outsider = {"REMOTE_ADDR": "203.0.113.7"}
    denied = client.get("/api/v1/health", **outsider)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert client.get("/api/v1/health", HTTP_AUTHORIZATION="Bearer wrong", **outsider).status_code == 403
    assert client.get("/api/v1/health", HTTP_AUTHORIZATION="Bearer s3cret-token", **outsider).status_code != 403
    assert client.get("/api/v1/health", REMOTE_ADDR="10.9.4.2").status_code != 403
    staff = django_user_model.objects.create_user(email="ops@hermes.test", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get("/api/v1/health", **outsider).status_code != 403
    # Liveness and readiness stay public.
    client.logout()
    assert client.get("/api/v1/health/live", **outsider).status_code == 200
    assert client.get("/api/v1/health/ready", **outsider).status_code == 200


def test_breakdown_reports_every_part_with_status_and_latency(
    client: Client, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("--queues", "ops-a,ops-b")
    beat_heartbeat()
    with override_settings(CELERY_TASK_DEFAULT_QUEUE="ops-a"):  # a worker consumes the queue this instance uses
        response = client.get("/api/v1/health")
    assert response.status_code == 200, response.content
    body = response.json()
    checks = body["checks"]
    for part in ("database", "redis", "broker", "channel_layer", "workers", "beat", "outbox"):
        assert checks[part]["status"] in {"ok", "not_available"}, (part, checks[part])
        assert checks[part]["latency_ms"] >= 0
    assert body["ready"] is True
    hostnames = {w["hostname"]: w for w in checks["workers"]["workers"]}
    assert hostnames[worker.hostname]["queues"] == ["ops-a", "ops-b"]
    assert {"ops-a", "ops-b"} <= set(checks["workers"]["queues"])
    assert checks["beat"]["last_run_age_s"] < 60
    # A stopped worker removes its heartbeat on a graceful shutdown.
    worker.stop()
    assert worker.hostname not in {w["hostname"] for w in seen_workers(60)[0]}


def test_beat_is_down_when_it_has_not_run_and_unknown_without_a_worker(client: Client) -> None:
    from apps.core.checks import redis_client
    from apps.ops.worker import WORKERS_KEY, record_worker

    caches["default"].delete(BEAT_KEY)
    redis = redis_client()
    # A worker that would have run beat's heartbeat job (sent to the default queue).
    record_worker("alive@test", [settings.CELERY_TASK_DEFAULT_QUEUE], client=redis)
    try:
        checks = client.get("/api/v1/health").json()["checks"]
        assert checks["beat"]["status"] == "down" and "no beat run" in checks["beat"]["detail"]
        assert checks["beat"]["fix"]
        # No worker at all: nothing runs the job beat sends, so beat's own state is unknown, not "down" (an
        # operator restarted a healthy beat for it); the workers line says what to fix.
        redis.hdel(WORKERS_KEY, "alive@test")
        body = client.get("/api/v1/health").json()
        assert body["checks"]["workers"]["status"] == "down"
        assert body["checks"]["beat"]["status"] == "not_available"
        assert "where beat's heartbeat job goes" in body["checks"]["beat"]["detail"]
        assert "beat" not in body["degraded"]
    finally:
        redis.hdel(WORKERS_KEY, "alive@test")
        redis.close()


def test_workers_are_down_when_none_consumes_the_queue_this_instance_sends_to(client: Client) -> None:
    """A worker of another installation (or one started with other --queues) was "1 seen … consuming
    qa_ops_queue: ok" while every job this instance sent stayed submitted."""
    from apps.core.checks import redis_client
    from apps.ops.worker import WORKERS_KEY, record_worker

    queue = f"ops-qa-{uuid.uuid4().hex[:8]}"
    other = f"ops-qa-other-{uuid.uuid4().hex[:8]}"
    redis = redis_client()
    record_worker("elsewhere@test", [other], client=redis)
    caches["default"].delete(BEAT_KEY)
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue):
            body = client.get("/api/v1/health").json()
            workers = body["checks"]["workers"]
            assert workers["status"] == "down" and "workers" in body["degraded"], workers
            assert workers["detail"].startswith(f"no worker consumes {queue}; "), workers
            assert " seen in the last " in workers["detail"] and other in workers["detail"], workers
            assert workers["default_queue"] == queue and queue in workers["fix"]
            # Beat's heartbeat job goes to that queue too: nothing runs it, so beat is unknown, not stopped.
            assert body["checks"]["beat"]["status"] == "not_available"
            assert f"no worker consumes {queue}" in body["checks"]["beat"]["detail"]
            out = io.StringIO()
            call_command("health", stdout=out)  # degraded, still ready: no exit 1
            assert f"workers          DOWN no worker consumes {queue}; " in out.getvalue()

            record_worker("ours@test", [queue], client=redis)
            workers = client.get("/api/v1/health").json()["checks"]["workers"]
            assert workers["status"] == "ok" and not workers["detail"].startswith("no worker"), workers
    finally:
        redis.hdel(WORKERS_KEY, "elsewhere@test", "ours@test")
        redis.close()


def test_beat_reports_itself_on_start_not_one_interval_later(client: Client) -> None:
    from celery.signals import beat_init

    from hermes_site.celery import app

    caches["default"].delete(BEAT_KEY)
    app.conf.task_always_eager = True  # the job runs here instead of on a worker
    try:
        beat_init.send(sender=None)  # what `celery beat` sends once it has started
    finally:
        app.conf.task_always_eager = False
    assert client.get("/api/v1/health").json()["checks"]["beat"]["status"] == "ok"


def test_stale_worker_heartbeats_are_not_counted() -> None:
    import time

    from apps.core.checks import redis_client
    from apps.ops.worker import WORKERS_KEY, record_worker

    client = redis_client()
    try:
        record_worker("fresh@test", ["celery"], client=client)
        client.hset(WORKERS_KEY, "old@test", json.dumps({"hostname": "old@test", "seen": time.time() - 120}))
        client.hset(WORKERS_KEY, "ancient@test", json.dumps({"hostname": "ancient@test", "seen": 1.0}))
        client.hset(WORKERS_KEY, "garbage@test", "not json")
        alive, pruned = seen_workers(60)
        names = {w["hostname"] for w in alive}
        assert "fresh@test" in names and "old@test" not in names
        assert pruned == 2 and not client.hexists(WORKERS_KEY, "ancient@test")
    finally:
        client.hdel(WORKERS_KEY, "fresh@test", "old@test")
        client.close()


def test_a_crashing_contributor_is_reported_not_raised() -> None:
    def broken() -> Probe:
        raise RuntimeError("boom")

    register_probe("broken-test", broken)
    try:
        probe = next(p for p in health_report().probes if p.name == "broken-test")
        assert not probe.ok and "boom" in probe.detail
        assert health_report().degraded.count("broken-test") == 1
    finally:
        from apps.core import checks

        checks._contributors.pop("broken-test")


def test_health_command_prints_the_breakdown_and_fails_when_not_ready(tmp_path: Path) -> None:
    beat_heartbeat()
    out = io.StringIO()
    call_command("health", stdout=out)  # no worker runs here: workers are reported but are not readiness
    text = out.getvalue()
    for part in ("database", "redis", "broker", "channel_layer", "workers", "beat", "outbox"):
        assert f"  {part}" in text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    out = io.StringIO()
    with _redis_settings(dead), pytest.raises(CommandError, match="not ready: redis, broker"):
        call_command("health", stdout=out)
    assert "redis            DOWN" in out.getvalue() and "fix:" in out.getvalue()
    out = io.StringIO()
    call_command("health", "--json", stdout=out)
    assert json.loads(out.getvalue())["ready"] is True


def test_health_and_doctor_give_the_same_verdict_for_a_dead_redis() -> None:
    """health said "not ready: redis, broker", doctor "not healthy: redis, broker, channel_layer": both now name
    the readiness checks first and label the rest (health adds its own contributors, e.g. workers)."""
    beat_heartbeat()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    verdicts, outputs = {}, {}
    with _redis_settings(dead):
        for command in ("health", "doctor"):
            out = io.StringIO()
            with pytest.raises(CommandError) as refused:
                call_command(command, stdout=out)
            verdicts[command], outputs[command] = str(refused.value), out.getvalue()
    expected = "not ready: redis, broker; also down (not readiness checks): channel_layer"
    assert verdicts["doctor"] == expected
    assert verdicts["health"].startswith(expected)
    # Workers and beat are unknown with their heartbeats' store down, not a reason to start a worker.
    assert "start a worker" not in outputs["health"] and "run exactly one" not in outputs["health"]
    assert "Redis is unreachable, and the heartbeats are kept there" in outputs["health"]


def test_operator_network_policy_tolerates_bad_entries() -> None:
    from apps.ops.access import address_allowed

    with override_settings(METRICS_ALLOWED_IPS=["not-a-network", "192.0.2.0/24"]):
        assert address_allowed("192.0.2.10")
        assert not address_allowed("198.51.100.1")
        assert not address_allowed("garbage")


@pytest.mark.django_db
def test_the_outbox_on_a_database_without_its_tables_says_migrate(monkeypatch: Any) -> None:
    """A reachable database whose migrations are not applied: the outbox query fails (no such table), which is
    not "deliveries are stuck" (that advice sent operators to workers and peers)."""
    from django.db import ProgrammingError

    from apps.core import checks
    from apps.federation import selectors
    from apps.ops.health import probe_outbox

    def no_table() -> dict[str, Any]:
        raise ProgrammingError('relation "federation_outbox" does not exist')

    monkeypatch.setattr(selectors, "delivery_backlog", no_table)
    monkeypatch.setattr(checks, "pending_migrations", lambda connection: ["federation.0001_initial"])
    probe = probe_outbox()
    assert (probe.ok, probe.available, probe.detail) == (False, False, "not checked: migrations are not applied")
    monkeypatch.setattr(checks, "pending_migrations", lambda connection: [])
    assert "deliveries are stuck" in probe_outbox().fix  # applied migrations: the query error is reported as is
