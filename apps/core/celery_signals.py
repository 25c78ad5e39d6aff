"""Celery signal handlers every process connects (imported by hermes_site.celery): job metrics.

They run in eager mode too (the web process then counts the jobs it ran inline).
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import task_postrun, task_prerun

from apps.core import metrics

_started: dict[str, float] = {}


@task_prerun.connect
def _job_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _job_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", "unknown")
    started = _started.pop(task_id or "", None)
    if started is not None:
        metrics.CELERY_JOB_DURATION.labels(job=name).observe(time.perf_counter() - started)
    # outcome: success, failure, retry (the job runs again later), ignored, ...
    metrics.CELERY_JOBS.labels(job=name, outcome=(state or "unknown").lower()).inc()
