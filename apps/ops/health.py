"""Health contributors owned by ops: Celery workers, beat, the federation outbox. Registered in OpsConfig.ready().

Each one is a `Probe` from apps.core.checks, so `GET /api/v1/health` and `manage.py health` print them the same
way as the core dependencies.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import caches

from apps.core import checks
from apps.core.checks import Probe, ProbeResult, register_probe, timed_probe
from apps.ops.tasks import BEAT_KEY
from apps.ops.worker import seen_workers

# The federation sweeper re-enqueues overdue deliveries every minute; anything pending for ten is stuck.
BACKLOG_STUCK_AFTER_S = 600


def _consumers_of(queue: str, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for w in workers if queue in w.get("queues", [])]


def probe_workers() -> Probe:
    window = settings.HEALTH_STALE_AFTER
    # The queue this instance sends its jobs to: a worker of another installation on a shared broker (or one
    # started with other --queues) is alive, but none of our jobs ever reaches it.
    queue = settings.CELERY_TASK_DEFAULT_QUEUE

    def run() -> ProbeResult:
        workers, _ = seen_workers(window)
        queues = sorted({q for w in workers for q in w.get("queues", [])})
        listed = [{"hostname": w["hostname"], "queues": w.get("queues", []), "age_s": w["age_s"]} for w in workers]
        seen = f"{len(workers)} seen in the last {window}s" + (f" consuming {', '.join(queues)}" if queues else "")
        consumed = bool(_consumers_of(queue, workers))
        detail = seen if consumed else f"no worker consumes {queue}; {seen}"
        return consumed, detail, {"workers": listed, "queues": queues, "default_queue": queue}

    fix = (
        f"start a worker consuming {queue}: `celery -A hermes_site worker` (Procfile: worker) with this instance's "
        f"CELERY_TASK_DEFAULT_QUEUE={queue}"
    )
    return _unless_redis_is_down(timed_probe("workers", run, fix))


def _unless_redis_is_down(probe: Probe) -> Probe:
    """Worker and beat heartbeats are kept in Redis: with Redis down they are unknown, and "start a worker" sent
    operators the wrong way (the redis line says what to fix)."""
    if probe.ok or checks.probe_redis().ok:
        return probe
    detail = "not checked: Redis is unreachable, and the heartbeats are kept there (see the redis line)"
    return Probe(probe.name, False, detail, probe.latency_ms, available=False)


def probe_beat() -> Probe:
    window = settings.HEALTH_STALE_AFTER

    def run() -> ProbeResult:
        last = caches["default"].get(BEAT_KEY)
        if last is None:
            return False, "no beat run recorded", {"last_run_age_s": None}
        age = time.time() - float(last)
        return age <= window, f"last run {age:.0f}s ago", {"last_run_age_s": round(age, 1)}

    fix = "run exactly one `celery -A hermes_site beat` and at least one worker"
    probe = _unless_redis_is_down(timed_probe("beat", run, fix))
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if probe.ok or not probe.available or _consumers_of(queue, seen_workers(window)[0]):
        return probe
    # Beat only sends its heartbeat job (to the default queue); a worker consuming that queue runs it. Without
    # one, a beat that runs fine looks stopped too, and "beat down" beside "workers down" sent operators to
    # restart a healthy beat.
    detail = f"not checked: no worker consumes {queue}, where beat's heartbeat job goes (see the workers line)"
    return Probe(probe.name, False, detail, probe.latency_ms, available=False)


def _delivery_backlog() -> Any:
    """The federation app's read of its outbox, or None when that app is not installed (HERMES_FEATURE_FEDERATION
    off does not remove the tables: the backlog still says whether anything waits)."""
    try:
        from apps.federation.selectors import delivery_backlog
    except ImportError:  # pragma: no cover - the federation app ships with Hermes
        return None
    return delivery_backlog


def probe_outbox() -> Probe:
    backlog_fn = _delivery_backlog()
    if backlog_fn is None:  # pragma: no cover - see _delivery_backlog
        return Probe(
            "outbox",
            True,
            "not available: apps.federation.selectors.delivery_backlog() is not installed",
            available=False,
        )

    if checks.database_recently_unreachable():  # the database probe just found it down: no second wait
        return Probe("outbox", False, "not checked: the database is unreachable", 0.0, available=False)
    if checks.missing_sqlite_file() is not None:  # querying it would create it
        return Probe("outbox", False, "not checked: the database does not exist yet", 0.0, available=False)

    def run() -> ProbeResult:
        backlog: dict[str, Any] = backlog_fn()
        oldest = backlog.get("oldest_pending_age_s")
        stuck = oldest is not None and oldest > BACKLOG_STUCK_AFTER_S
        detail = f"{backlog.get('outbox_backlog', 0)} pending, {backlog.get('dead_letters', 0)} dead letters" + (
            f", oldest pending {oldest:.0f}s" if oldest is not None else ""
        )
        return not stuck, detail, dict(backlog)

    probe = timed_probe("outbox", run, "deliveries are stuck: check workers, beat and the peers' reachability")
    if not probe.ok and not checks.database_reachable():
        # The backlog lives in the database: with the database down it is unknown, not stuck (the database line
        # says what to fix; "check workers and peers" sent operators the wrong way).
        return Probe("outbox", False, "not checked: the database is unreachable", probe.latency_ms, available=False)
    if not probe.ok and not probe.extra:
        # The query itself failed on a reachable database: most often its tables do not exist yet.
        from django.db import connection

        if checks.pending_migrations(connection):
            return Probe("outbox", False, "not checked: migrations are not applied", probe.latency_ms, available=False)
    return probe


# The fix of undecryptable link keys, shared by `doctor`, `health` and the worker's startup warning.
LINK_KEYS_FIX = (
    "bring back the key they were stored with, then restart every process: after a SECRET_KEY change (with "
    "HERMES_FIELD_KEY unset) set HERMES_FIELD_KEY to the previous SECRET_KEY's field key, which "
    "`SECRET_KEY='<previous>' python -m apps.core.crypto` prints; after a HERMES_FIELD_KEY change set "
    'HERMES_FIELD_KEY=<new>,<previous> (docs/configuration.md, "Changing SECRET_KEY or HERMES_FIELD_KEY"). '
    "With the old key lost, give each link a new key with its peer (federation_keys add, promote, retire)"
)


def _live_link_keys() -> Any:
    """The live link keys (those that sign or verify), or None when the federation app is not installed. Read
    from the model: apps.federation.selectors reads them per peer only, and this reads nothing else."""
    try:
        from apps.federation.models import LIVE_KEY_STATES, LinkKey
    except ImportError:  # pragma: no cover - the federation app ships with Hermes
        return None
    return LinkKey.objects.filter(state__in=LIVE_KEY_STATES).select_related("peer").order_by("peer__name", "version")


def probe_link_keys() -> Probe:
    """Whether the field key decrypts every live federation link key. A changed SECRET_KEY (with HERMES_FIELD_KEY
    unset) or HERMES_FIELD_KEY made them unreadable, and nothing said so: each delivery to or from those peers
    failed with "internal error: DecryptionError" until it was dead-lettered."""
    from apps.core import crypto

    keys = _live_link_keys()
    if keys is None:  # pragma: no cover - see _live_link_keys
        return Probe("link_keys", True, "not available: the federation app is not installed", available=False)
    if checks.database_recently_unreachable():
        return Probe("link_keys", False, "not checked: the database is unreachable", 0.0, available=False)
    if checks.missing_sqlite_file() is not None:
        return Probe("link_keys", False, "not checked: the database does not exist yet", 0.0, available=False)

    def run() -> ProbeResult:
        rows = list(keys)
        broken = [key for key in rows if not crypto.decrypts(key.secret_encrypted)]
        peers = sorted({key.peer.name for key in broken})
        extra = {"link_keys": len(rows), "undecryptable_link_keys": len(broken), "undecryptable_peers": peers}
        if not broken:
            return True, f"{len(rows)} live, all decrypt with the field key", extra
        named = ", ".join(f"{key.peer.name} k{key.version}" for key in broken[:10]) + (
            ", …" if len(broken) > 10 else ""
        )
        detail = (
            f"{len(broken)} of {len(rows)} live link keys cannot be decrypted ({named}): HERMES_FIELD_KEY, or "
            "SECRET_KEY while HERMES_FIELD_KEY is unset, changed since they were stored; every message to or from "
            f"{', '.join(peers)} fails"
        )
        return False, detail, extra

    probe = timed_probe("link_keys", run, LINK_KEYS_FIX)
    if not probe.ok and not probe.extra:  # the query failed, as in probe_outbox: the database or its tables
        if not checks.database_reachable():
            return Probe(
                "link_keys", False, "not checked: the database is unreachable", probe.latency_ms, available=False
            )
        from django.db import connection

        if checks.pending_migrations(connection):
            return Probe(
                "link_keys", False, "not checked: migrations are not applied", probe.latency_ms, available=False
            )
    return probe


def register() -> None:
    register_probe("workers", probe_workers)
    register_probe("beat", probe_beat)
    register_probe("outbox", probe_outbox)
    register_probe("link_keys", probe_link_keys)
