"""Prometheus exposition: `/metrics` in web processes and a small exporter in Celery workers.

Single process: the default registry. With PROMETHEUS_MULTIPROC_DIR set (gunicorn workers, prefork Celery
children) every process writes its values to files there and the exposition merges them with
`MultiProcessCollector`; see docs/observability.md. Values that live in the database (outbox backlog, dead
letters) are read at scrape time, so they are right however many processes there are.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.db import connections
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, make_wsgi_app, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.core import metrics
from apps.ops.access import machine_allowed, proxy_header

logger = logging.getLogger(__name__)

# psycopg_pool.get_stats() keys → (metric suffix, kind, help, scale)
_POOL_GAUGES = {
    "pool_min": ("min", "Configured minimum connections"),
    "pool_max": ("max", "Configured maximum connections"),
    "pool_size": ("size", "Connections in the pool (busy and idle)"),
    "pool_available": ("available", "Idle connections ready to hand out"),
    "requests_waiting": ("requests_waiting", "Requests waiting for a connection now"),
}
_POOL_COUNTERS = {
    "requests_num": ("requests", "Connections requested from the pool", 1.0),
    "requests_queued": ("requests_queued", "Requests that had to wait for a connection", 1.0),
    "requests_wait_ms": ("requests_wait_seconds", "Time spent waiting for a connection", 0.001),
    "requests_errors": ("requests_errors", "Requests that failed (timeout, pool closed)", 1.0),
    "connections_errors": ("connection_errors", "Failed connection attempts", 1.0),
    "connections_lost": ("connections_lost", "Connections found broken on check", 1.0),
}


class DatabasePoolCollector(Collector):
    """psycopg pool statistics of this process, read at scrape time (only processes with DATABASE_POOL)."""

    def _families(self) -> tuple[dict[str, GaugeMetricFamily], dict[str, CounterMetricFamily]]:
        gauges = {
            key: GaugeMetricFamily(f"hermes_db_pool_{name}", doc, labels=["alias"])
            for key, (name, doc) in _POOL_GAUGES.items()
        }
        counters = {
            key: CounterMetricFamily(f"hermes_db_pool_{name}", doc, labels=["alias"])
            for key, (name, doc, _) in _POOL_COUNTERS.items()
        }
        return gauges, counters

    def describe(self) -> Iterable[Metric]:
        gauges, counters = self._families()
        return [*gauges.values(), *counters.values()]

    def collect(self) -> Iterable[Metric]:
        gauges, counters = self._families()
        for alias in connections:
            # Read the class-level pool map rather than `.pool`, which would create (and open) a pool.
            pools: dict[str, Any] = getattr(type(connections[alias]), "_connection_pools", {})
            pool = pools.get(alias)
            if pool is None:
                continue
            stats = pool.get_stats()
            for key, gauge in gauges.items():
                gauge.add_metric([alias], float(stats.get(key, 0)))
            for key, counter in counters.items():
                counter.add_metric([alias], float(stats.get(key, 0)) * _POOL_COUNTERS[key][2])
        return [*gauges.values(), *counters.values()]


POOL_COLLECTOR = DatabasePoolCollector()


def register_collectors() -> None:
    """Called once from OpsConfig.ready(): the pool collector joins the default registry."""
    with contextlib.suppress(ValueError):  # already registered (ready() ran twice, e.g. in tests)
        REGISTRY.register(POOL_COLLECTOR)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition_registry() -> CollectorRegistry:
    if not multiprocess_enabled():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(POOL_COLLECTOR)
    return registry


def update_scrape_gauges() -> None:
    """Refresh the gauges whose truth is elsewhere (dependencies, the outbox table) from one health report."""
    from apps.core.checks import health_report

    for probe in health_report().probes:
        # 1 only for a check that ran and passed. A check that could not run ("not checked: Redis is unreachable")
        # is 0 as well: skipping it left the last scrape's 1 in place, so the worker and beat alerts stayed
        # silent through a Redis outage (docs/observability.md, "Health gauges").
        metrics.HEALTH_STATUS.labels(check=probe.name).set(1 if probe.ok and probe.available else 0)
        metrics.HEALTH_LATENCY.labels(check=probe.name).set(probe.latency_ms / 1000)
        if probe.name == "outbox" and "outbox_backlog" in probe.extra:
            metrics.FEDERATION_OUTBOX_BACKLOG.set(probe.extra.get("outbox_backlog") or 0)
            metrics.FEDERATION_DEAD_LETTERS.set(probe.extra.get("dead_letters") or 0)
            metrics.FEDERATION_OLDEST_PENDING_AGE.set(probe.extra.get("oldest_pending_age_s") or 0)


def render() -> bytes:
    update_scrape_gauges()
    return generate_latest(exposition_registry())


# --- Celery worker exporter -------------------------------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s are not news
        pass


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _worker_app(exposition: WsgiApp) -> WsgiApp:
    """prometheus_client's app behind the access policy, at `/metrics` only and answering HEAD as the web's does
    (docs/deploy.md): as it is, it answered every path with the metrics and HEAD with 405."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not machine_allowed(
            environ.get("REMOTE_ADDR", ""), environ.get("HTTP_AUTHORIZATION", ""), proxy_header(environ)
        ):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"metrics: send Authorization: Bearer <METRICS_TOKEN> or scrape from METRICS_ALLOWED_IPS\n"]
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the worker's metrics are at /metrics\n"]
        return exposition(environ, start_response)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return answer(environ, start_response)
        # What GET would answer (its status and headers, Content-Length included), without the body.
        answered: list[tuple[str, list[tuple[str, str]]]] = []
        body = answer(
            {**environ, "REQUEST_METHOD": "GET"}, lambda status, headers, *_: answered.append((status, headers))
        )
        status, headers = answered[0]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(sum(len(chunk) for chunk in body)))]
        start_response(status, headers)
        return []

    return app


class WorkerExporter:
    """A tiny HTTP server in the worker's main process serving its (and, multiprocess, its children's) metrics."""

    def __init__(self, host: str, port: int) -> None:
        app = _worker_app(make_wsgi_app(exposition_registry()))
        self.server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="hermes-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_exporter: WorkerExporter | None = None


def start_worker_exporter(host: str, port: int) -> WorkerExporter | None:
    """Serve the worker's metrics on `host:port` (0: off). A port that cannot be bound is one error line and the
    worker runs on without /metrics: it was a traceback from the worker_ready signal, and the startup summary
    after it never printed."""
    global _exporter
    if port <= 0 or _exporter is not None:
        return _exporter
    if not settings.HERMES_FEATURES.get("metrics", True):
        # The flag turns off every /metrics, not only the web's: the Procfile sets a port (bound on 0.0.0.0) for
        # every worker, so the exporter went on serving with the feature off.
        logger.info("worker metrics exporter not started: HERMES_FEATURE_METRICS=false")
        return None
    try:
        _exporter = WorkerExporter(host, port)
    except OSError as exc:  # the port is taken, the address is not this machine's, the host name does not resolve
        port_problem = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        variable, what = (
            ("CELERY_WORKER_METRICS_PORT", "port") if port_problem else ("CELERY_WORKER_METRICS_HOST", "address")
        )
        logger.error(
            "worker metrics exporter not started: cannot serve on %s:%s (%s): %s. Set %s to another %s "
            "(CELERY_WORKER_METRICS_PORT=0 turns the exporter off); the worker runs on without /metrics.",
            host,
            port,
            f"{variable}={port if port_problem else host}",
            exc.strerror or exc,
            variable,
            what,
        )
        return None
    _exporter.start()
    logger.info("worker metrics exporter on http://%s:%s/metrics", host, _exporter.port)
    return _exporter


def stop_worker_exporter() -> None:
    global _exporter
    if _exporter is not None:
        _exporter.stop()
        _exporter = None


def clear_stale_metric_files() -> int:
    """At worker start: values left by processes of a previous run would be summed into this one."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return 0
    removed = 0
    for path in Path(directory).glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def mark_process_dead(pid: int) -> None:
    """gunicorn child_exit / Celery worker_process_shutdown: drop a dead process's live gauges."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Read one sample from an exposition (tests and `manage.py health` style tooling)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def registered_metric_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name the registry can produce (with _total/_bucket/... suffixes), for checking alert rules and
    dashboards. prometheus_client keeps this map to refuse duplicate registrations; there is no public accessor."""
    return set(registry._names_to_collectors)
