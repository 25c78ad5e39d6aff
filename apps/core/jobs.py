"""The base class of every Hermes Celery job (hermes_site.celery sets it as the app's `task_cls`).

Every job works from database rows, and what a skipped job leaves undone is picked up again once the database
is back: task runs and federation deliveries are re-dispatched from their rows by `sweep_tasks` and
`sweep_outbox`, periodic jobs run on their next beat, and `cancel_remote_task` is best effort as when the agent
refuses it. So a job that finds the database unreachable logs one warning line and ends as *ignored*, instead of
Celery's ERROR with a traceback for every job while Postgres is down (several a minute from beat alone).
An error the database answered with (a deadlock, a constraint) still fails the job as before.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from django.db import DatabaseError

from apps.core import checks

logger = logging.getLogger(__name__)


class HermesJob(Task):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except DatabaseError as error:
            if not checks.is_database_outage(error):
                raise
            logger.warning(
                "job %s[%s] skipped: the database is unreachable (%s)",
                self.name,
                self.request.id,
                checks.error_line(error),
            )
            raise Ignore() from error
