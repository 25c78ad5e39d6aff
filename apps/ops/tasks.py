from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from celery import shared_task
from django.core.cache import caches

from apps.core.logging import redact

logger = logging.getLogger(__name__)
BEAT_KEY = "ops:last-beat"
PING_KEY = "ops:ping:{}"
PING_TTL_S = 3600


@shared_task(name="apps.ops.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Scheduled by beat; its timestamp tells health checks that beat and a worker are alive."""
    try:
        caches["default"].set(BEAT_KEY, time.time(), timeout=3600)
    except Exception:  # Redis down: health reports it separately; beat must keep ticking
        logger.warning("beat heartbeat not recorded: cache unavailable")


@shared_task(name="apps.ops.tasks.ping_url", ignore_result=True)
def ping_url(probe_id: str, url: str) -> dict[str, Any]:
    """The egress diagnostic (`POST /api/v1/ops/ping`): can a worker reach `url`, and how fast?"""
    started = time.perf_counter()
    result: dict[str, Any] = {"id": probe_id, "url": url, "status": "done"}
    try:
        with httpx.Client(timeout=5.0, follow_redirects=False) as client:
            response = client.get(url, headers={"User-Agent": "hermes-ops-ping"})
        result["http_status"] = response.status_code
    except httpx.HTTPError as exc:
        result.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
    result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    level = logging.INFO if result["status"] == "done" else logging.WARNING
    # The URL may carry credentials (`user:pass@`, `?token=`): the line names it without them. (RedactFilter would
    # mask them too; a line that never held them does not depend on the handler's configuration.)
    shown = redact(url)
    outcome = result.get("http_status", result.get("error"))
    logger.log(level, "ping %s -> %s", shown, outcome, extra={"probe": {**result, "url": shown}})
    caches["default"].set(PING_KEY.format(probe_id), result, timeout=PING_TTL_S)
    return result
