"""Celery jobs: run a task against its agent, cancel it remotely, and sweep for lost or overdue tasks.

The database row is the truth. A job message only names a task; the worker claims the row with
`SELECT … FOR UPDATE SKIP LOCKED` and a claim check (no live claim by another worker), so a duplicate or late
message is harmless. While it runs, a heartbeat thread stamps `heartbeat_at` and, reading the row every
WATCH_SECONDS, notices a cancel request or that the task ended without it, and ends the call to the agent. The
sweeper (beat) re-dispatches tasks whose worker stopped heartbeating or whose message never arrived, and fails
tasks past their deadline.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.core import checks
from apps.core.context import bound
from apps.core.metrics import TASK_RETRIES, TASKS_RECOVERED
from apps.tasks import actions, execution
from apps.tasks.models import (
    INTERRUPTED_STATES,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    EventKind,
    Task,
    TaskEvent,
    TaskState,
)

logger = logging.getLogger(__name__)


# A run message that finds its task's row locked by someone else comes back this much later, up to BUSY_RETRIES
# times (a row locked that long is left to the sweeper).
BUSY_RETRY_SECONDS = 0.2
BUSY_RETRIES = 25


def dispatch(task_id: Any, countdown: float = 0, busy: int = 0) -> None:
    """Send a run message; a broker outage is logged, not raised (the sweeper re-dispatches from the row)."""
    try:
        run_task.apply_async(args=[str(task_id)], kwargs={"busy": busy} if busy else None, countdown=countdown or None)
    except Exception as exc:
        logger.warning("task %s: dispatch failed (%s); the sweeper will re-dispatch it", task_id, exc)


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped: attempt 1 → up to base, 2 → up to 2·base, …"""
    base = settings.HERMES_TASK_RETRY_BASE_SECONDS
    ceiling = min(settings.HERMES_TASK_RETRY_MAX_SECONDS, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _runnable(task_id: Any) -> QuerySet[Task]:
    return Task.objects.unscoped("a worker claims the task named in its message").filter(
        # A federated agent's task runs on the other org's side; no worker here ever calls that agent.
        pk=task_id,
        state__in=RUNNABLE_STATES,
        agent__federation_address="",
    )


def claim(task_id: Any, worker: str) -> Task | None:
    """Take the task if it is runnable and nobody live holds it; move submitted → working. None otherwise."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.HERMES_TASK_STALE_SECONDS)
    with transaction.atomic():
        # The task row only, not its agent's.
        task = _runnable(task_id).select_for_update(skip_locked=True, of=("self",)).first()
        if task is None:
            return None
        if task.claimed_by and task.heartbeat_at and task.heartbeat_at > stale:
            return None  # a live worker has it; this message is a duplicate
        task.claimed_by, task.claimed_at, task.heartbeat_at = worker, now, now
        task.attempts += 1
        task.save(update_fields=["claimed_by", "claimed_at", "heartbeat_at", "attempts", "updated_at"])
    if task.state == TaskState.SUBMITTED and not task.cancel_requested_at:
        task = actions.record(task, [actions.Observation(kind="state", data={}, state=TaskState.WORKING)])
    return task


# How often a running task's worker reads its row (one primary-key read; `heartbeat_at` is written only every
# HERMES_TASK_HEARTBEAT_SECONDS): the bound on how late it notices a cancel, or that the task ended without it (its
# deadline failed it, the org was deleted, another worker took it over).
WATCH_SECONDS = 0.5


class Heartbeat(threading.Thread):
    """Watches the claimed row while the job runs: every WATCH_SECONDS it reads it, calling `on_cancel` once when
    the caller asked to cancel and `on_lost` (then stopping) when the row is no longer ours — terminal, interrupted
    or re-claimed after we were presumed dead, or deleted; every HERMES_TASK_HEARTBEAT_SECONDS it also stamps
    `heartbeat_at`. The database row is the truth: this works the same with Redis down."""

    def __init__(
        self, task_id: Any, worker: str, *, on_cancel: Callable[[], None], on_lost: Callable[[], None]
    ) -> None:
        super().__init__(name=f"heartbeat-{task_id}", daemon=True)
        self.task_id = task_id
        self.worker = worker
        self.on_cancel = on_cancel
        self.on_lost = on_lost
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.database_down = False

    def run(self) -> None:
        every = settings.HERMES_TASK_HEARTBEAT_SECONDS
        next_beat = time.monotonic() + every
        try:
            while not self.stop.wait(min(WATCH_SECONDS, every)):
                beat = time.monotonic() >= next_beat
                if beat:
                    next_beat = time.monotonic() + every
                self.watch(beat=beat)
        finally:
            connection.close()  # this thread ends here; its connection must not outlive it

    def watch(self, *, beat: bool = False) -> None:
        try:
            rows = Task.objects.unscoped("heartbeat of the claimed task").filter(
                pk=self.task_id, claimed_by=self.worker
            )
            row = rows.values_list("cancel_requested_at", "deadline_at").first()
            if row is not None and row[1] is not None and row[1] < timezone.now():
                # Past its deadline: failed here and now, not when the sweeper runs. The sweeper shares the
                # workers' slots, and agents that hang can hold every one of them.
                fail_overdue(Task.objects.unscoped("the claimed task").get(pk=self.task_id))
                row = None
            if row is None or (beat and not rows.update(heartbeat_at=timezone.now())):
                self.lost.set()
                self.stop.set()
                self.on_lost()
                return
            if row[0] and not self.cancel.is_set():
                self.cancel.set()
                self.on_cancel()
        except Exception as exc:
            if not checks.is_database_outage(exc):
                logger.exception("task %s: heartbeat failed", self.task_id)
                return
            if not self.database_down:  # one line per outage, not one every WATCH_SECONDS
                logger.warning("task %s: the database is unreachable; the heartbeat waits for it", self.task_id)
            self.database_down = True
            return
        self.database_down = False


@shared_task(name="apps.tasks.tasks.run_task", ignore_result=True)
def run_task(task_id: str, busy: int = 0) -> None:
    worker = worker_id()
    task = claim(task_id, worker)
    if task is None:
        # Skipped as locked, not as taken: a request is changing the row this instant (a follow-up, a cancel, a
        # duplicate follow-up being refused), or another worker is claiming it. Look again shortly rather than
        # leave the task to the sweeper a minute later; another worker's claim makes the next look a no-op.
        if busy < BUSY_RETRIES and _runnable(task_id).filter(claimed_by="").exists():
            dispatch(task_id, countdown=BUSY_RETRY_SECONDS, busy=busy + 1)
        return
    with bound(task_id=str(task.pk), org_id=task.organization_id):
        _run_claimed(task, worker)


def _run_claimed(task: Task, worker: str) -> None:
    run = execution.Run(task, worker)
    heartbeat = Heartbeat(task.pk, worker, on_cancel=run.request_cancel, on_lost=run.halt.set)
    heartbeat.start()
    try:
        if task.cancel_requested_at:
            actions.finish(task, TaskState.CANCELED, reason="canceled by the caller")
            run.stop_agent()
            return
        outcome = run.execute()
    except Task.DoesNotExist:
        # The row was deleted while the agent worked (its organization was deleted): nobody waits for the result
        # and there is nothing to record it on; only the agent is still busy.
        logger.info("task %s was deleted while running; asking the agent to stop it", task.pk)
        run.stop_agent()
        return
    except execution.AgentTransportError as exc:
        _transport_failure(task, exc)
        return
    except execution.AgentError as exc:
        actions.finish(task, TaskState.FAILED, error=str(exc) or type(exc).__name__)
        return
    except Exception as exc:
        if checks.is_database_outage(exc):
            # Not a bug, and nothing can be written: the job ends as a skipped one (one warning line, see
            # apps.core.celery_signals), and the sweeper resumes the task once the database is back.
            raise
        # A bug of ours, not the agent's: fail visibly rather than leave the task claimed forever.
        logger.exception("task %s: unexpected error", task.pk)
        # Its type only: the message of an internal error (a database error quotes the SQL) is for the log, not
        # for whoever reads the task.
        actions.finish(task, TaskState.FAILED, error=f"internal error ({type(exc).__name__}); see the worker's log")
        return
    finally:
        heartbeat.stop.set()
        heartbeat.join(timeout=5)
    _settle(task, worker, outcome, canceled=heartbeat.cancel.is_set())


def _settle(task: Task, worker: str, outcome: str | None, *, canceled: bool) -> None:
    """After the conversation ended: make sure the row is terminal, interrupted or released."""
    current = Task.objects.unscoped("settling the claimed task").filter(pk=task.pk).first()
    if current is None:
        return  # deleted meanwhile (with its organization)
    if current.is_terminal or current.state in INTERRUPTED_STATES:
        if current.claimed_by == worker:
            Task.objects.unscoped("release").filter(pk=task.pk, claimed_by=worker).update(
                claimed_by="", claimed_at=None
            )
        return
    if canceled or current.cancel_requested_at:
        actions.finish(task, TaskState.CANCELED, reason="canceled by the caller")
    elif current.claimed_by != worker:
        return  # the claim was lost (we were presumed dead); the new holder settles it
    else:
        actions.finish(task, TaskState.FAILED, error=outcome or "the agent ended without a final state")


def _transport_failure(task: Task, exc: Exception) -> None:
    current = Task.objects.unscoped("transport failure bookkeeping").filter(pk=task.pk).first()
    if current is None:
        return  # deleted meanwhile (with its organization)
    error = f"{type(exc).__name__}: {exc}"
    if current.cancel_requested_at:
        actions.finish(task, TaskState.CANCELED, reason="canceled by the caller")
        return
    attempt = _attempts_this_turn(current)
    if attempt >= settings.HERMES_TASK_MAX_ATTEMPTS:
        actions.finish(task, TaskState.FAILED, error=f"gave up after {attempt} attempts: {error}")
        if current.remote_task_id:
            # A cut stream is not a stopped agent: it may still be working on a task nobody will read.
            _cancel_at_agent(task.pk, current.remote_task_id)
        return
    # An agent that says when to call again (429/503 with Retry-After) is waited for, up to the backoff ceiling.
    asked = getattr(exc, "retry_after", None) or 0.0
    delay = max(backoff(attempt), min(asked, settings.HERMES_TASK_RETRY_MAX_SECONDS))
    TASK_RETRIES.labels(agent=str(task.agent_id)).inc()
    actions.note_retry(task, reason="transport_error", error=error, attempt=attempt, delay=delay)
    dispatch(task.pk, countdown=delay)


def _attempts_this_turn(task: Task) -> int:
    """Runs since the caller last spoke (the input, or the latest follow-up), this one included: each turn of a
    conversation gets HERMES_TASK_MAX_ATTEMPTS of its own. Counted on the whole task, five follow-ups used up the
    budget and the next transport error failed the task without a single retry."""
    events = TaskEvent.objects.for_org(task.organization_id).filter(task=task)
    turn = events.filter(kind=EventKind.MESSAGE, data__role="user").order_by("-seq").values_list("seq", flat=True)
    return 1 + events.filter(kind=EventKind.RETRY, seq__gt=turn.first() or 0).count()


@shared_task(name="apps.tasks.tasks.cancel_remote_task", ignore_result=True)
def cancel_remote_task(task_id: str, remote_task_id: str) -> None:
    """Tell the agent to cancel a task no worker is running (it waited for input, or was queued)."""
    task = Task.objects.unscoped("remote cancel by id").select_related("agent").filter(pk=task_id).first()
    if task is None:
        return
    try:
        execution.cancel_remote(task, remote_task_id)
    except (execution.AgentTransportError, execution.AgentError) as exc:
        logger.info("task %s: the agent's CancelTask failed: %s", task_id, exc)
        actions.note_agent_cancel_failed(task.organization_id, task.pk, str(exc))


def _cancel_at_agent(task_id: Any, remote_task_id: str) -> None:
    try:
        cancel_remote_task.delay(str(task_id), remote_task_id)
    except Exception as exc:  # the broker is down: the agent's task stays open; ours is final regardless
        logger.warning("task %s: could not send the agent's CancelTask (%s)", task_id, exc)


def fail_overdue(task: Task) -> None:
    """Fail a task past its deadline: by the sweeper, or by the watcher of the worker running it. One whose cancel
    was asked for (and answered 202) before that ends canceled, as asked."""
    if task.cancel_requested_at:
        actions.finish(task, TaskState.CANCELED, reason="canceled by the caller")  # a no-op if it ended
    else:
        actions.finish(task, TaskState.FAILED, error="deadline exceeded", reason="deadline")
    if task.remote_task_id and not task.claimed_by:
        # Nobody runs it (it waited for input): tell the agent its task is over. A claimed task's worker sees the
        # task end within WATCH_SECONDS, ends its call and does so itself.
        _cancel_at_agent(task.pk, task.remote_task_id)
    TASKS_RECOVERED.labels(outcome="deadline").inc()


@shared_task(name="apps.tasks.tasks.sweep_tasks", ignore_result=True)
def sweep_tasks() -> dict[str, int]:
    """Beat job: fail tasks past their deadline, re-dispatch tasks whose worker or message was lost, look whether
    auth-required tasks went on at their agent."""
    now = timezone.now()
    counts = {"deadline": 0, "redispatched": 0, "auth_rechecked": 0}
    active = Task.objects.unscoped("the sweeper scans every org").exclude(state__in=TERMINAL_STATES)
    overdue = active.filter(deadline_at__lt=now)
    fields = ("pk", "organization_id", "agent_id", "state", "claimed_by", "remote_task_id", "cancel_requested_at")
    for task in overdue.only(*fields):
        fail_overdue(task)
        counts["deadline"] += 1

    stale = now - timedelta(seconds=settings.HERMES_TASK_STALE_SECONDS)
    lost_worker = Q(claimed_by__gt="", heartbeat_at__lt=stale)
    lost_message = Q(
        claimed_by="", next_attempt_at__lt=now - timedelta(seconds=settings.HERMES_TASK_REDISPATCH_SECONDS)
    )
    candidates = active.filter(state__in=RUNNABLE_STATES).filter(lost_worker | lost_message)
    for task in candidates.only("pk", "claimed_by", "attempts"):
        if task.claimed_by:
            released = (
                Task.objects.unscoped("sweeper releases a dead worker's claim")
                .filter(pk=task.pk, claimed_by=task.claimed_by, heartbeat_at__lt=stale)
                .update(claimed_by="", claimed_at=None, next_attempt_at=now)
            )
            if not released:
                continue
            actions.note_retry(
                task, reason="worker_lost", error=f"worker {task.claimed_by} stopped", attempt=task.attempts, delay=0
            )
        else:
            Task.objects.unscoped("sweeper re-dispatch").filter(pk=task.pk).update(next_attempt_at=now)
        TASKS_RECOVERED.labels(outcome="redispatched").inc()
        dispatch(task.pk)
        counts["redispatched"] += 1
    # An auth-required task can go on without a word from us: the person signs in elsewhere (the SDK's out-of-band
    # model) and the agent carries on. Nobody follows an interrupted task, so each sweep looks at the agent's.
    waiting = active.filter(
        state=TaskState.AUTH_REQUIRED, claimed_by="", pending_message__isnull=True, agent__federation_address=""
    ).exclude(remote_task_id="")
    for task_id in waiting.values_list("pk", flat=True):
        try:
            recheck_auth_required.delay(str(task_id))
        except Exception as exc:  # the broker is down: the next sweep looks again
            logger.warning("task %s: could not send the auth-required check (%s)", task_id, exc)
            continue
        counts["auth_rechecked"] += 1
    if any(counts.values()):
        logger.info("sweeper: %s", counts)
    return counts


@shared_task(name="apps.tasks.tasks.recheck_auth_required", ignore_result=True)
def recheck_auth_required(task_id: str) -> None:
    """Resume an auth-required task whose agent no longer waits (the sign-in happened out of band): as a task
    whose worker was lost is resumed — the agent's snapshot, then its stream or polling, without recording twice
    what the timeline holds. Until then, nothing: the agent keeps the task waiting."""
    task = (
        Task.objects.unscoped("the sweeper's auth-required check")
        .select_related("agent")
        .filter(pk=task_id, state=TaskState.AUTH_REQUIRED, claimed_by="", pending_message__isnull=True)
        .first()
    )
    if task is None or not task.remote_task_id:
        return  # answered, ended or taken up since the sweep
    try:
        state = execution.agent_state(task)
    except (execution.AgentTransportError, execution.AgentError) as exc:
        logger.info("task %s: the agent's task could not be read (%s); the next sweep looks again", task_id, exc)
        return
    if state in (None, TaskState.AUTH_REQUIRED):
        return
    task = actions.record(task, [actions.Observation(kind=EventKind.STATE, data={}, state=TaskState.WORKING)])
    if task.state == TaskState.WORKING:
        dispatch(task.pk)
