"""OpenTelemetry, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set (and HERMES_FEATURE_TRACING is on).

`init_tracing()` runs once per process from CoreConfig.ready(), i.e. in every process that sets Django up: the
WSGI and ASGI servers, Celery worker and beat, manage.py. When tracing is off it returns before importing the
SDK or any instrumentation: no middleware is inserted, no library is patched, and the OpenTelemetry API stays the
no-op default, so the cost is one settings lookup at boot.

When on it instruments Django requests, psycopg (every SQL statement), Celery (publish and run; the job's span
continues the trace of the request that enqueued it through the message headers), httpx (calls to agents and
peers) and Redis, and exports spans in batches over OTLP/HTTP (protobuf).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, Any] = {"initialized": False, "provider": None}


def tracing_configured() -> bool:
    return bool(settings.HERMES_FEATURES.get("tracing", True) and settings.OTEL_EXPORTER_OTLP_ENDPOINT)


def traces_endpoint(base: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL (spec); traces go to <base>/v1/traces."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def init_tracing(process: str | None = None) -> bool:
    """Install the SDK and instrumentation once; return whether tracing is on in this process."""
    with _lock:
        if _state["initialized"]:
            return _state["provider"] is not None
        _state["initialized"] = True
        if not tracing_configured():
            return False
        _state["provider"] = _install(process or _process_name())
        return True


def _process_name() -> str:
    import sys

    argv = " ".join(sys.argv[:3])
    for needle, name in (("celery", "celery"), ("gunicorn", "web"), ("uvicorn", "websocket"), ("manage.py", "manage")):
        if needle in argv:
            return name
    return "python"


def _install(process: str) -> Any:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.OTEL_SERVICE_NAME,
            "service.version": settings.HERMES_VERSION,
            "deployment.environment": settings.HERMES_ENV,
            "process.runtime.name": "cpython",
            "hermes.process": process,
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=traces_endpoint(settings.OTEL_EXPORTER_OTLP_ENDPOINT), timeout=5)
    # The batch processor re-creates its export thread after fork (prefork Celery children, gunicorn workers).
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)

    # Probes and scrapes every few seconds would drown real traffic.
    DjangoInstrumentor().instrument(excluded_urls="/api/v1/health/live$,/api/v1/health/ready$,/metrics$")
    PsycopgInstrumentor().instrument(skip_dep_check=True)
    CeleryInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    RedisInstrumentor().instrument()
    logger.info("tracing on: exporting to %s as %s", traces_endpoint(settings.OTEL_EXPORTER_OTLP_ENDPOINT), process)
    return provider


def flush(timeout_ms: int = 5000) -> bool:
    """Export what is buffered now (tests, and worker shutdown so the last jobs' spans are not lost)."""
    provider = _state["provider"]
    return bool(provider.force_flush(timeout_ms)) if provider is not None else True
