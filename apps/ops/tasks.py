from __future__ import annotations

import logging
import time

from celery import shared_task
from django.core.cache import caches

logger = logging.getLogger(__name__)
BEAT_KEY = "ops:last-beat"


@shared_task(name="apps.ops.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Scheduled by beat; its timestamp tells health checks that beat and a worker are alive."""
    try:
        caches["default"].set(BEAT_KEY, time.time(), timeout=3600)
    except Exception:  # Redis down: health reports it separately; beat must keep ticking
        logger.warning("beat heartbeat not recorded: cache unavailable")
