"""Celery signal handlers every process connects (imported by hermes_site.celery): log context and job metrics.

The log context crosses the broker in a message header: `before_task_publish` writes the publisher's
request_id/org_id/user_id/task_id into `hermes_context`, `task_prerun` binds it (plus job_id) in the worker and
`task_postrun` restores the previous context. In eager mode there is no publish; the job inherits the caller's
context and the caller gets it back untouched afterwards.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun

from apps.core import context, metrics

HEADER = "hermes_context"
_started: dict[str, float] = {}
_tokens: dict[str, context.Token[dict[str, Any] | None]] = {}


@before_task_publish.connect
def _attach_context(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        values = context.propagated()
        if values:
            headers[HEADER] = values


@task_prerun.connect
def _job_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    carried = getattr(getattr(task, "request", None), HEADER, None) or {}
    values = {k: v for k, v in carried.items() if k in context.PROPAGATED} if isinstance(carried, dict) else {}
    if task_id:
        _tokens[task_id] = context.push(**values, job_id=task_id)
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _job_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", "unknown")
    started = _started.pop(task_id or "", None)
    if started is not None:
        metrics.CELERY_JOB_DURATION.labels(job=name).observe(time.perf_counter() - started)
    # outcome: success, failure, retry (the job runs again later), ignored, ...
    metrics.CELERY_JOBS.labels(job=name, outcome=(state or "unknown").lower()).inc()
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        try:
            context.pop(token)
        except ValueError:  # pushed in another context (a thread pool handing the job around): start clean
            context.clear()
