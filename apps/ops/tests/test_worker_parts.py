"""The worker-side pieces in-process (the subprocess tests prove them end to end, but coverage cannot see there)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.test import override_settings

from apps.ops import metrics as ops_metrics
from apps.ops import worker
from apps.ops.metrics import sample_value
from apps.ops.tasks import beat_heartbeat
from apps.ops.tests.conftest import wait_for


@override_settings(METRICS_TOKEN="tok", METRICS_ALLOWED_IPS=[])
def test_worker_exporter_serves_gated_metrics() -> None:
    beat_heartbeat.apply()  # runs through Celery's tracer: the job signals count it
    exporter = ops_metrics.start_worker_exporter("127.0.0.1", 0)
    assert exporter is None  # port 0 means off
    exporter = ops_metrics.WorkerExporter("127.0.0.1", 0)
    exporter.start()
    try:
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        assert httpx.get(url, timeout=5).status_code == 403
        text = httpx.get(url, headers={"Authorization": "Bearer tok"}, timeout=5).text
        labels = {"job": "apps.ops.tasks.beat_heartbeat", "outcome": "success"}
        assert (sample_value(text, "hermes_celery_jobs_total", labels) or 0) >= 1
    finally:
        exporter.stop()


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=["127.0.0.1"])
def test_the_worker_exporter_refuses_what_came_through_a_proxy_whatever_header_says_so() -> None:
    # As /metrics on the web (apps.ops.access.proxy_header): only X-Forwarded-For counted here.
    exporter = ops_metrics.WorkerExporter("127.0.0.1", 0)
    exporter.start()
    try:
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        assert httpx.get(url, timeout=5).status_code == 200  # loopback, no proxy
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded", "Via"):
            assert httpx.get(url, headers={header: "1.2.3.4"}, timeout=5).status_code == 403, header
    finally:
        exporter.stop()


def test_exporter_lifecycle_is_idempotent(free_port: int) -> None:
    first = ops_metrics.start_worker_exporter("127.0.0.1", free_port)
    try:
        assert first is not None and ops_metrics.start_worker_exporter("127.0.0.1", free_port) is first
        assert httpx.get(f"http://127.0.0.1:{free_port}/metrics", timeout=5).status_code == 200
    finally:
        ops_metrics.stop_worker_exporter()
    ops_metrics.stop_worker_exporter()  # stopping twice is harmless


@pytest.mark.parametrize(
    ("host", "blamed"),
    [("127.0.0.1", "CELERY_WORKER_METRICS_PORT={port}"), ("10.99.99.99", "CELERY_WORKER_METRICS_HOST=10.99.99.99")],
)
def test_an_exporter_that_cannot_bind_is_one_line_and_the_worker_runs_on(
    free_port: int, caplog: pytest.LogCaptureFixture, host: str, blamed: str
) -> None:
    """A taken port was `Signal handler _on_worker_ready raised: OSError(98…)` with a traceback, and the startup
    summary after it never printed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        with caplog.at_level(logging.INFO, logger="apps.ops.metrics"):
            assert ops_metrics.start_worker_exporter(host, free_port) is None
    (line,) = [r for r in caplog.records if r.name == "apps.ops.metrics"]
    assert line.levelno == logging.ERROR and line.exc_info is None
    assert blamed.format(port=free_port) in line.getMessage() and f"{host}:{free_port}" in line.getMessage()
    # Nothing half-started is kept: once the port is free the exporter starts.
    assert ops_metrics.start_worker_exporter("127.0.0.1", free_port) is not None
    ops_metrics.stop_worker_exporter()


def test_stale_multiprocess_files_are_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ops_metrics.clear_stale_metric_files() == 0  # no directory configured: nothing to do
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_1.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_2.db").write_bytes(b"")
    mine = tmp_path / f"counter_{os.getpid()}.db"
    mine.write_bytes(b"")
    assert ops_metrics.clear_stale_metric_files() == 2
    assert [p.name for p in tmp_path.iterdir()] == [mine.name]
    assert ops_metrics.multiprocess_enabled()
    registry = ops_metrics.exposition_registry()
    assert registry is not ops_metrics.REGISTRY
    ops_metrics.mark_process_dead(12345)  # no live gauge files for that pid: a no-op, not an error


def test_worker_heartbeat_thread_records_and_forgets() -> None:
    consumer = SimpleNamespace(
        hostname="inproc@test",
        task_consumer=SimpleNamespace(queues=[SimpleNamespace(name="q2"), SimpleNamespace(name="q1")]),
    )
    worker.start_heartbeat(consumer)
    try:
        found = wait_for(lambda: [w for w in worker.seen_workers(60)[0] if w["hostname"] == "inproc@test"])
        assert found[0]["queues"] == ["q1", "q2"] and found[0]["pid"] == os.getpid()
    finally:
        worker.stop_heartbeat()
    assert "inproc@test" not in {w["hostname"] for w in worker.seen_workers(60)[0]}
    worker.stop_heartbeat()  # idempotent


def test_heartbeat_survives_a_dead_redis(caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        beat = worker.WorkerHeartbeat("dead@test", [], interval=0.05)
        beat.start()
        wait_for(lambda: "heartbeat not recorded" in caplog.text, timeout=10)
        beat.stop()
    assert "could not remove its heartbeat" in caplog.text
