from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from apps.core import tracing
from apps.ops.tests.conftest import WorkerProcess, serve_wsgi, wait_for
from apps.ops.tests.otlp import OTLPReceiver
from hermes_site.config import BASE_DIR


@pytest.fixture
def http_target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/agent"
    server.shutdown()
    server.server_close()


def test_tracing_costs_nothing_when_off() -> None:
    """No endpoint in the test settings: no SDK provider, no Django middleware, no library patched."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    assert settings.OTEL_EXPORTER_OTLP_ENDPOINT == ""
    assert tracing.init_tracing() is False
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert not any("opentelemetry" in m for m in settings.MIDDLEWARE)
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert not PsycopgInstrumentor().is_instrumented_by_opentelemetry
    assert tracing.flush() is True


def test_traces_endpoint_follows_the_otlp_convention() -> None:
    assert tracing.traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_endpoint("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def _parent(spans: list[dict[str, Any]], span: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in spans if s["span_id"] == span["parent_span_id"]), None)


@pytest.mark.django_db(transaction=True)
def test_one_trace_spans_the_request_the_celery_job_and_the_outbound_call(
    start_worker: Callable[..., WorkerProcess],
    free_port: int,
    http_target: str,
    tmp_path: Path,
) -> None:
    with OTLPReceiver() as receiver:
        queue = f"ops-trace-{uuid.uuid4().hex[:8]}"
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "hermes-trace-test",
            "METRICS_TOKEN": "trace-token",
            "CELERY_TASK_DEFAULT_QUEUE": queue,
        }
        worker = start_worker("--queues", queue, **env)
        with serve_wsgi(tmp_path / "web.log", free_port, **env) as base:
            auth = {"Authorization": "Bearer trace-token"}
            trace_id = secrets.token_hex(16)
            upstream_span = secrets.token_hex(8)
            response = httpx.post(
                f"{base}/api/v1/ops/ping",
                json={"url": http_target},
                headers={**auth, "traceparent": f"00-{trace_id}-{upstream_span}-01"},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            probe = response.json()["id"]
            wait_for(
                lambda: (
                    httpx.get(f"{base}/api/v1/ops/ping/{probe}", headers=auth, timeout=5).json()["status"] == "done"
                ),
                timeout=30,
            )

            def complete() -> list[dict[str, Any]] | None:
                spans = receiver.trace(trace_id)
                kinds = {(s["resource"].get("hermes.process"), s["kind"]) for s in spans}
                wanted = {("web", "SERVER"), ("web", "PRODUCER"), ("celery", "CONSUMER"), ("celery", "CLIENT")}
                return spans if wanted <= kinds else None

            spans = wait_for(complete, timeout=30)

            server = next(s for s in spans if s["kind"] == "SERVER")
            assert server["parent_span_id"] == upstream_span  # continues the caller's trace
            assert server["attributes"].get("http.route") == "api/v1/ops/ping" or "ops/ping" in server["name"]
            producer = next(s for s in spans if s["kind"] == "PRODUCER")
            assert producer["name"] == "apply_async/apps.ops.tasks.ping_url"
            consumer = next(s for s in spans if s["kind"] == "CONSUMER")
            assert consumer["name"] == "run/apps.ops.tasks.ping_url"
            assert consumer["parent_span_id"] == producer["span_id"]  # the job continues the request's trace
            outbound = next(
                s
                for s in spans
                if s["kind"] == "CLIENT"
                and s["resource"]["hermes.process"] == "celery"
                and s["scope"].endswith("httpx")
            )
            assert outbound["parent_span_id"] == consumer["span_id"]
            assert http_target in json.dumps(outbound["attributes"])
            # Redis (the view records the pending probe in the cache) is part of the request's trace too.
            assert any(s["scope"].endswith("redis") and s["resource"]["hermes.process"] == "web" for s in spans)
            assert {s["resource"]["service.name"] for s in spans} == {"hermes-trace-test"}

            # The job's log line names the same trace.
            job_lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
            ping_line = next(r for r in job_lines if r.get("logger") == "apps.ops.tasks")
            assert ping_line["trace_id"] == trace_id

            # Database calls: the health breakdown queries Postgres inside its request span.
            db_trace = secrets.token_hex(16)
            httpx.get(
                f"{base}/api/v1/health",
                headers={**auth, "traceparent": f"00-{db_trace}-{secrets.token_hex(8)}-01"},
                timeout=10,
            )
            db_spans = wait_for(
                lambda: [s for s in receiver.trace(db_trace) if s["attributes"].get("db.system") == "postgresql"],
                timeout=30,
            )
            assert any("SELECT" in str(s["attributes"].get("db.statement", s["name"])) for s in db_spans)


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_to_the_echo_agent_is_one_trace_and_its_logs_carry_the_context(
    start_worker: Callable[..., WorkerProcess], free_port: int, tmp_path: Path, org: Any, alice: Any
) -> None:
    """The product path: POST /api/v1/tasks (uvicorn, as `make run` serves it) → Celery `run_task` → the
    worker's A2A call over HTTP to the echo demo agent served by the same web process."""
    from apps.agents.models import Agent
    from apps.ops.tests.conftest import child_env
    from tests.factories import issue_api_key

    with OTLPReceiver() as receiver:
        base = f"http://127.0.0.1:{free_port}"
        queue = f"ops-trace-{uuid.uuid4().hex[:8]}"
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "HERMES_SSRF_ALLOWLIST": "127.0.0.1",
            "HERMES_PUBLIC_URL": base,
        }
        log = tmp_path / "web.log"
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "hermes_site.asgi:application", "--port", str(free_port)],
            cwd=BASE_DIR,
            env=child_env(**env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:

            def up() -> bool:
                assert web.poll() is None, log.read_text()
                try:
                    return httpx.get(f"{base}/api/v1/health/live", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=60)
            worker = start_worker("--queues", queue, **env)
            agent = Agent.objects.create(
                organization=org,
                slug="echo",
                name="Echo",
                url=f"{base}/demo-agents/echo/",
                capabilities={"streaming": True},
            )
            _, plaintext = issue_api_key(alice, org, ["tasks:write", "tasks:read"])
            auth = {"Authorization": f"Bearer {plaintext}"}
            trace_id = secrets.token_hex(16)
            response = httpx.post(
                f"{base}/api/v1/tasks",
                json={"agent": str(agent.pk), "input": {"parts": [{"kind": "text", "text": "hello"}]}},
                headers={**auth, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "X-Request-ID": "req-task"},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["id"]
            wait_for(
                lambda: (
                    httpx.get(f"{base}/api/v1/tasks/{task_id}", headers=auth, timeout=5).json()["status"] == "completed"
                ),
                timeout=60,
            )

            def complete() -> list[dict[str, Any]] | None:
                spans = receiver.trace(trace_id)
                have = {(s["resource"].get("hermes.process"), s["kind"]) for s in spans}
                wanted = {
                    ("websocket", "SERVER"),
                    ("websocket", "PRODUCER"),
                    ("celery", "CONSUMER"),
                    ("celery", "CLIENT"),
                }
                return spans if wanted <= have else None

            try:
                spans = wait_for(complete, timeout=30)
            except AssertionError:
                seen = [(s["resource"].get("hermes.process"), s["kind"], s["name"]) for s in receiver.trace(trace_id)]
                raise AssertionError(f"incomplete trace: {seen}") from None
            consumer = next(s for s in spans if s["kind"] == "CONSUMER")
            assert consumer["name"] == "run/apps.tasks.tasks.run_task"
            producer = next(s for s in spans if s["kind"] == "PRODUCER")
            assert consumer["parent_span_id"] == producer["span_id"]
            calls = [s for s in spans if s["kind"] == "CLIENT" and s["scope"].endswith("httpx")]
            assert any("/demo-agents/echo/" in json.dumps(s["attributes"]) for s in calls)
            assert any(s["attributes"].get("db.system") == "postgresql" for s in spans)  # the INSERT, the claim

            # Logs: the worker's lines during the agent call carry the request's and the task's context.
            def agent_call_line() -> dict[str, Any] | None:
                for raw in worker.output().splitlines():
                    if raw.startswith("{") and '"task_id"' in raw:
                        line = json.loads(raw)
                        if line.get("task_id") == task_id and line.get("logger") == "httpx":
                            return line
                return None

            line = wait_for(agent_call_line, timeout=10)
            assert line["request_id"] == "req-task" and line["org_id"] == org.pk and line["user_id"] == alice.pk
            assert line["trace_id"] == trace_id and line["job_id"]
        finally:
            web.terminate()
            web.wait(timeout=30)
