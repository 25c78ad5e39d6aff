from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.test import Client, override_settings

from apps.ops.metrics import registered_metric_names, sample_value
from apps.ops.tests.conftest import WorkerProcess, child_env, serve_wsgi, wait_for
from hermes_site.config import BASE_DIR

DEPLOY = BASE_DIR / "deploy"
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_promql_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{view!~"x|y"}[5m]))) / clamp_min(sum(b_total), 1e-9)'
        " > 0.5 and on (job) c unless d offset 5m"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def _alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            found += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return found


def test_alert_rules_cover_the_service_objectives() -> None:
    names = {alert for alert, _ in _alert_expressions()}
    for objective in (
        "HermesApiLatencyP95High",
        "HermesTaskSuccessRateLow",
        "HermesMessageDeliveryLatencyHigh",
        "HermesDeadLetterRate",
    ):
        assert objective in names
    boards = {p.name for p in (DEPLOY / "grafana").glob("*.json")}
    assert boards == {"hermes-health.json", "hermes-errors.json", "hermes-federation.json", "hermes-org-usage.json"}


@pytest.mark.parametrize("source", ["alerts", "dashboards"])
def test_every_metric_named_in_deploy_exists(source: str) -> None:
    known = registered_metric_names()
    expressions = _alert_expressions() if source == "alerts" else _dashboard_expressions()
    assert expressions
    for where, expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing = names - known
        assert not missing, f"{where} names unknown metrics {sorted(missing)}"


def test_dashboards_are_what_the_generator_writes() -> None:
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    for name, board in generate.DASHBOARDS.items():
        assert json.loads((DEPLOY / "grafana" / name).read_text()) == board, (
            f"re-run deploy/grafana/generate.py ({name})"
        )


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="scrape-me", METRICS_ALLOWED_IPS=["127.0.0.1"])
def test_metrics_endpoint_access(client: Client) -> None:
    outsider = {"REMOTE_ADDR": "198.51.100.4"}
    denied = client.get("/metrics", **outsider)
    assert denied.status_code == 403 and denied["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **outsider).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me", **outsider).status_code == 200
    assert client.get("/metrics").status_code == 200  # 127.0.0.1 is allowed
    # ... but not a visitor whom a reverse proxy on the same host forwarded (its peer address is 127.0.0.1 too).
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 403
    proxied_with_token = client.get("/metrics", HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert proxied_with_token.status_code == 200
    with override_settings(HERMES_FEATURES={"metrics": False}):
        assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="scrape-me", METRICS_ALLOWED_IPS=["127.0.0.1"])
@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_FORWARDED": "for=198.51.100.4"},  # RFC 7239
        {"HTTP_X_REAL_IP": "198.51.100.4"},  # nginx
        {"HTTP_VIA": "1.1 proxy.example"},  # Apache, Varnish, Squid
        {"HTTP_X_FORWARDED_HOST": "hermes.example.com"},
    ],
)
def test_a_request_through_a_proxy_is_not_loopback_whatever_header_says_so(
    client: Client, header: dict[str, str]
) -> None:
    # Only X-Forwarded-For counted: a same-host proxy sending X-Real-IP handed every visitor the loopback access.
    for path in ("/metrics", "/api/v1/health"):
        assert client.get(path, **header).status_code == 403, (path, header)
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me", **header).status_code == 200
    assert client.get("/metrics").status_code == 200  # without one, loopback is still allowed


@pytest.mark.django_db
def test_metrics_exposition_has_http_db_health_and_domain_metrics(client: Client) -> None:
    client.get("/api/v1/health/live")
    text = client.get("/metrics").content.decode()
    assert (
        sample_value(text, "django_http_requests_total_by_view_transport_method_total", {"view": "health-live"}) or 0
    ) >= 1
    assert sample_value(text, "hermes_health_status", {"check": "database"}) == 1.0
    assert sample_value(text, "hermes_health_status", {"check": "redis"}) == 1.0
    assert (sample_value(text, "hermes_health_check_latency_seconds", {"check": "broker"}) or -1) >= 0
    for declared in ("hermes_tasks_total", "hermes_federation_deliveries_total", "hermes_quota_rejections_total"):
        assert f"# TYPE {declared} counter" in text
    assert "# TYPE hermes_db_pool_size gauge" in text
    assert "django_db_execute_total" in text


@pytest.mark.django_db
def test_a_check_that_cannot_run_is_exported_as_0_not_as_its_last_value(client: Client) -> None:
    """With Redis unreachable the workers check is "not checked": the scrape skipped it, so the gauge kept the
    last scrape's 1 and HermesNoCeleryWorker could not fire for the whole outage."""
    import socket
    import uuid

    from apps.core.checks import redis_client
    from apps.ops.worker import WORKERS_KEY, record_worker

    queue = f"metrics-qa-{uuid.uuid4().hex[:8]}"
    redis = redis_client()
    record_worker("metrics-qa@test", [queue], client=redis)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    try:
        with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue):
            text = client.get("/metrics").content.decode()
            assert sample_value(text, "hermes_health_status", {"check": "workers"}) == 1.0
            with override_settings(REDIS_URL=dead, CELERY_BROKER_URL=dead):
                health = client.get("/api/v1/health").json()["checks"]
                assert health["workers"]["status"] == "not_available", health["workers"]
                text = client.get("/metrics").content.decode()
        assert sample_value(text, "hermes_health_status", {"check": "redis"}) == 0.0
        assert sample_value(text, "hermes_health_status", {"check": "workers"}) == 0.0
    finally:
        redis.hdel(WORKERS_KEY, "metrics-qa@test")
        redis.close()


def test_gunicorn_workers_are_summed_in_multiprocess_mode(
    tmp_path: Path, free_port: int, django_db_blocker: Any
) -> None:
    """Two gunicorn workers, one PROMETHEUS_MULTIPROC_DIR: every scrape (whichever worker answers) sees all
    requests, not just its own."""
    with (
        django_db_blocker.unblock(),
        serve_wsgi(
            tmp_path / "gunicorn.log",
            free_port,
            workers=2,
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
            METRICS_ALLOWED_IPS="127.0.0.1",
        ) as base,
    ):
        served = 1  # the readiness loop's successful request
        for _ in range(29):
            with httpx.Client() as fresh:  # a fresh connection each time spreads requests over the workers
                assert fresh.get(f"{base}/api/v1/health/live", headers={"Connection": "close"}).status_code == 200
            served += 1
        labels = {"view": "health-live", "method": "GET"}
        for _ in range(6):
            with httpx.Client() as fresh:
                scrape = fresh.get(f"{base}/metrics", headers={"Connection": "close"})
            assert scrape.status_code == 200, scrape.text
            total = sample_value(scrape.text, "django_http_requests_total_by_view_transport_method_total", labels)
            assert total is not None and total >= served
        assert len(list((tmp_path / "prom").glob("counter_*.db"))) >= 2, "both workers wrote their values"


@pytest.mark.django_db(transaction=True)
def test_celery_worker_exports_job_metrics(start_worker: Callable[..., WorkerProcess], free_port: int) -> None:
    from apps.ops.tasks import beat_heartbeat

    start_worker(CELERY_WORKER_METRICS_PORT=str(free_port), METRICS_TOKEN="w-token", METRICS_ALLOWED_IPS="")
    url = f"http://127.0.0.1:{free_port}/metrics"
    assert httpx.get(url, timeout=5).status_code == 403
    beat_heartbeat.delay()
    labels = {"job": "apps.ops.tasks.beat_heartbeat", "outcome": "success"}

    def counted() -> float | None:
        text = httpx.get(url, headers={"Authorization": "Bearer w-token"}, timeout=5).text
        return sample_value(text, "hermes_celery_jobs_total", labels)

    assert wait_for(counted, timeout=30) >= 1
    text = httpx.get(url, headers={"Authorization": "Bearer w-token"}, timeout=5).text
    count = sample_value(text, "hermes_celery_job_duration_seconds_count", {"job": "apps.ops.tasks.beat_heartbeat"})
    assert count is not None and count >= 1


def test_asgi_process_reports_its_connection_pool(tmp_path: Path, free_port: int, django_db_blocker: Any) -> None:
    with django_db_blocker.unblock():
        env = child_env(METRICS_ALLOWED_IPS="127.0.0.1")
    env.pop("DATABASE_POOL", None)  # the ASGI entry point turns the pool on
    log = tmp_path / "uvicorn.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hermes_site.asgi:application", "--port", str(free_port)],
        cwd=BASE_DIR,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{free_port}"
    try:

        def scrape() -> str | None:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{base}/api/v1/health/ready", timeout=5)  # uses the database through the pool
                response = httpx.get(f"{base}/metrics", timeout=5)
            except httpx.TransportError:
                return None
            return response.text if response.status_code == 200 else None

        text = wait_for(scrape, timeout=60)
        assert (sample_value(text, "hermes_db_pool_size", {"alias": "default"}) or 0) >= 1
        assert (sample_value(text, "hermes_db_pool_requests_total", {"alias": "default"}) or 0) >= 1
        assert sample_value(text, "hermes_db_pool_max", {"alias": "default"}) == 10.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
