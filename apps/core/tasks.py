from __future__ import annotations

import logging

from celery import shared_task

from apps.core.idempotency import purge_expired

logger = logging.getLogger(__name__)


@shared_task(name="apps.core.tasks.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records() -> int:
    """Scheduled by beat: idempotency records are only needed for their TTL (a day)."""
    deleted = purge_expired()
    if deleted:
        logger.info("purged %d expired idempotency records", deleted)
    return deleted
