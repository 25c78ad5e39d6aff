"""Tasks sent to A2A agents and their timelines.

The `Task` row is the truth about a job: a Celery message only says "look at this row". Every state change,
agent message, artifact and progress update is a `TaskEvent` with a per-task sequence number, so a client that
saw event N can always ask for N+1 onwards (websocket backfill, SSE resume, `?after=`).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from rest_framework.fields import DateTimeField

from apps.core.tenancy import OrgOwnedModel


class TaskState(models.TextChoices):
    # The A2A task states, spelled as the protocol's JSON binding spells them.
    SUBMITTED = "submitted", "Submitted"
    WORKING = "working", "Working"
    INPUT_REQUIRED = "input-required", "Input required"
    AUTH_REQUIRED = "auth-required", "Auth required"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    REJECTED = "rejected", "Rejected"


TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED})
# States in which a worker owns the task (or should, once the sweeper re-dispatches it).
RUNNABLE_STATES = frozenset({TaskState.SUBMITTED, TaskState.WORKING})
# States where the agent waits for the caller; no worker holds the task.
INTERRUPTED_STATES = frozenset({TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED})

_ANY_END = {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    TaskState.SUBMITTED: frozenset({TaskState.WORKING, *INTERRUPTED_STATES, *_ANY_END}),
    TaskState.WORKING: frozenset({*INTERRUPTED_STATES, *_ANY_END}),
    # A follow-up message (or credentials) moves the task back to working; the caller may also give up.
    TaskState.INPUT_REQUIRED: frozenset({TaskState.WORKING, *_ANY_END}),
    TaskState.AUTH_REQUIRED: frozenset({TaskState.WORKING, *_ANY_END}),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELED: frozenset(),
    TaskState.REJECTED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"a task cannot move from {current} to {target}")
        self.current = current
        self.target = target


def check_transition(current: str, target: str) -> None:
    """The one place that decides which state moves are legal (A2A's lifecycle; terminal states are final)."""
    if target not in ALLOWED_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(current, target)


class Task(OrgOwnedModel):
    """A message sent by `organization` to `agent` and everything that followed.

    `organization` is the org that sent the task (and sees it); the agent may belong to another org when it is
    public in the marketplace.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Without OrgOwnedModel's single-column indexes: the composite indexes below start with the organization, and
    # every read by date is within an org. Each index is written on every submit.
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # RESTRICT, not PROTECT: an agent with tasks cannot be deleted on its own, but deleting its org (which
    # cascades to the org's tasks too) may remove both in one go.
    agent = models.ForeignKey("agents.Agent", on_delete=models.RESTRICT, related_name="tasks")
    state = models.CharField(max_length=20, choices=TaskState.choices, default=TaskState.SUBMITTED)
    # The A2A message as sent: {"role": "user", "parts": [{"kind": "text", "text": ...} | {"kind": "data", ...}]}.
    input = models.JSONField()
    metadata = models.JSONField(default=dict, blank=True)
    # A follow-up message accepted in input-required/auth-required and not yet delivered by a worker.
    pending_message = models.JSONField(null=True, blank=True)
    remote_task_id = models.CharField(max_length=200, blank=True, default="")
    remote_context_id = models.CharField(max_length=200, blank=True, default="")

    # Execution bookkeeping (written by workers and the sweeper).
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_error = models.TextField(blank=True, default="")
    # The last allocated TaskEvent.seq; bumped inside the task's row lock so seqs are dense and unique.
    last_seq = models.PositiveIntegerField(default=0)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The API key the task was sent with, if any (the task outlives a deleted key).
    api_key = models.ForeignKey("orgs.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            # GET /api/v1/tasks?status=…: an org's tasks newest first, optionally by state.
            models.Index(fields=["organization", "state", "-created_at"], name="tasks_org_state_created"),
            # GET /api/v1/tasks?agent=…
            models.Index(fields=["organization", "agent", "-created_at"], name="tasks_org_agent_created"),
            # The sweeper: non-terminal tasks by heartbeat / deadline.
            models.Index(
                fields=["state", "heartbeat_at"],
                name="tasks_active_heartbeat",
                condition=~models.Q(state__in=["completed", "failed", "canceled", "rejected"]),
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class EventKind(models.TextChoices):
    STATE = "state", "State change"
    MESSAGE = "message", "Message"
    ARTIFACT = "artifact", "Artifact"
    PROGRESS = "progress", "Progress"
    RETRY = "retry", "Retry"
    ERROR = "error", "Error"


# How the REST API writes a datetime (TaskEventSerializer's DateTimeField), for the live surfaces to write the same.
_REST_DATETIME = DateTimeField()


class TaskEvent(OrgOwnedModel):
    # Indexed by the (task, seq) constraint, which starts with it; and nothing reads events by date alone.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ("task", "seq")
        constraints = [
            # Also the index for "events of a task after seq N" (backfill, SSE resume, ?after=).
            models.UniqueConstraint(fields=["task", "seq"], name="tasks_event_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}#{self.seq} {self.kind}"

    def as_message(self) -> dict[str, Any]:
        """An event as the websocket and SSE send it. The REST timeline (TaskEventSerializer) leaves out `task_id`,
        which its page gives once; `created_at` is the string it writes (DRF's, ending in `Z`), so a client that
        joins events from several surfaces on (seq, created_at) finds them equal."""
        return {
            "task_id": str(self.task_id),
            "seq": self.seq,
            "kind": self.kind,
            "data": self.data,
            "created_at": _REST_DATETIME.to_representation(self.created_at),
        }
