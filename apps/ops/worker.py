"""What a Celery worker tells the rest of Hermes about itself: a heartbeat in Redis (for health).

The heartbeat is a daemon thread in the worker's main process, not a Celery bootstep on the event loop: a slow
or dead Redis then delays only the heartbeat, never job consumption. Workers are recorded in one Redis hash
(`hermes:ops:workers`, field = worker hostname) so health can list every worker with one HGETALL.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

WORKERS_KEY = "hermes:ops:workers"
HEARTBEAT_INTERVAL_S = 10.0


def record_worker(hostname: str, queues: list[str], *, client: Any = None) -> None:
    from apps.core.checks import redis_client

    own = client is None
    client = client or redis_client()
    try:
        payload = {"hostname": hostname, "queues": queues, "pid": os.getpid(), "seen": time.time()}
        client.hset(WORKERS_KEY, hostname, json.dumps(payload))
    finally:
        if own:
            client.close()


def forget_worker(hostname: str) -> None:
    from apps.core.checks import redis_client

    client = redis_client()
    try:
        client.hdel(WORKERS_KEY, hostname)
    finally:
        client.close()


def seen_workers(within_s: float) -> tuple[list[dict[str, Any]], int]:
    """Workers whose heartbeat is younger than `within_s`, and how many stale entries were pruned."""
    from apps.core.checks import redis_client

    client = redis_client()
    try:
        raw = client.hgetall(WORKERS_KEY)
        now = time.time()
        alive, stale = [], []
        for field, value in raw.items():
            try:
                info = json.loads(value)
                age = now - float(info["seen"])
            except (ValueError, KeyError, TypeError):
                stale.append(field)
                continue
            if age <= within_s:
                alive.append({**info, "age_s": round(age, 1)})
            elif age > 86400:  # a worker gone for a day is history, not news
                stale.append(field)
        if stale:
            client.hdel(WORKERS_KEY, *stale)
        return sorted(alive, key=lambda w: str(w["hostname"])), len(stale)
    finally:
        client.close()


class WorkerHeartbeat:
    def __init__(self, hostname: str, queues: list[str], interval: float = HEARTBEAT_INTERVAL_S) -> None:
        self.hostname, self.queues, self.interval = hostname, queues, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hermes-worker-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            forget_worker(self.hostname)
        except Exception:
            logger.warning("worker %s could not remove its heartbeat (Redis down)", self.hostname)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                record_worker(self.hostname, self.queues)
            except Exception as exc:
                logger.warning("worker heartbeat not recorded: %s", exc)
            self._stop.wait(self.interval)


_heartbeat: WorkerHeartbeat | None = None


def start_heartbeat(consumer: Any) -> None:
    """worker_ready handler: `consumer` is the worker's Consumer (hostname and the queues it consumes)."""
    global _heartbeat
    queues = sorted(q.name for q in getattr(consumer.task_consumer, "queues", []) or [])
    _heartbeat = WorkerHeartbeat(consumer.hostname, queues)
    _heartbeat.start()


def stop_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
