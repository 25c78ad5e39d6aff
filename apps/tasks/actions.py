"""Every state change of tasks: create, cancel, continue, and what workers record while a task runs.

Each function runs in one transaction that holds the task's row lock, appends TaskEvents with the next sequence
numbers, and schedules side effects (Celery dispatch, channel-layer broadcast, the `task_event_recorded` signal)
with `transaction.on_commit`, so nobody ever hears about a row that was rolled back.

Callable without an HTTP request (federation creates tasks for peer orgs through `create_task`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from apps.core import audit, jsonutil
from apps.core.db import insert_together
from apps.core.errors import HermesAPIError
from apps.core.metrics import TASK_DURATION, TASKS
from apps.core.permissions import Access
from apps.orgs import quotas
from apps.tasks import broadcast
from apps.tasks.models import (
    INTERRUPTED_STATES,
    TERMINAL_STATES,
    EventKind,
    Task,
    TaskEvent,
    TaskState,
    check_transition,
)

logger = logging.getLogger(__name__)

# Sent after commit, once per recorded event: kwargs `task` (the Task as of the commit) and `event` (TaskEvent).
# Federation listens to report status back to the peer that sent the task.
task_event_recorded = Signal()

# Sent *inside* create_task's transaction for an agent reached through federation (`agent.is_federated`), with
# kwargs `task`, `agent`, `user` and `access`. Its receiver (federation) writes the task request in the same
# transaction — or raises (policy denied, unknown peer …), which refuses the task and writes nothing.
task_submitted_remotely = Signal()
# Likewise inside continue_task's transaction, with kwargs `task` and `message`: federation relays the follow-up.
task_follow_up_remotely = Signal()


class TaskInputTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the task input is {size} bytes; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class TaskNotCancelable(Exception):
    pass


class TaskNotWaitingForInput(Exception):
    pass


class AgentNotUsable(Exception):
    """The agent takes nothing from this org: not its own and not public (any more), or retired. `reason` is
    `retired` (only ever said to the agent's own org) or `unavailable`."""

    def __init__(self, message: str, *, agent_id: Any, reason: str) -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.reason = reason


def check_agent_usable(agent: Any, org: Any) -> None:
    """The one rule for sending an agent anything, a new task or a follow-up: it is the org's own or a public one
    (`Agent.is_usable_by`) and not retired (deleted while tasks referred to it). Raises AgentNotUsable.

    At creation the agent comes from `Agent.objects`, which holds no retired agent; a follow-up reaches the agent
    through its task, which keeps it after its owner made it private or deleted it — without this check the
    follow-up ran it anyway. Reads `visibility`, `organization_id` and `retired_at`: a caller that loads the agent
    with `.only()` loads those, or pays a query for each one deferred."""
    if not agent.is_usable_by(org):
        # Said the same whether its owner made it private or deleted it (deleting makes it private too): another
        # org learns nothing of what the owner did.
        raise AgentNotUsable(
            "The agent is no longer available to this organization: its owner made it private or deleted it.",
            agent_id=agent.pk,
            reason="unavailable",
        )
    if agent.retired_at is not None:
        raise AgentNotUsable(
            "The agent was deleted (retired): its tasks keep it for their history, but it takes no new task or "
            "message.",
            agent_id=agent.pk,
            reason="retired",
        )


class InvalidMessage(ValueError):
    """An input no agent could be sent; `field` names where it came in (`input`, the message, or `metadata`)."""

    def __init__(self, reason: str, *, field: str = "input") -> None:
        super().__init__(reason)
        self.field = field


# A2A v1.0 carries data parts and metadata as protobuf Structs, and the SDK — Hermes' client and every agent built
# with it — decodes a message at most 100 protobuf levels deep, three per JSON object: a data part of 33 levels
# (measured: SendMessageRequest and StreamResponse alike) is "Exceeded upb_DecodeOptions_MaxDepth" at the agent.
# Hermes would accept it and the task would fail there, so it is refused up front — at 24, leaving an agent room to
# wrap what it received in a result of its own (an echo of a 32-level input already failed).
MAX_JSON_DEPTH = 24


def json_depth(value: Any) -> int:
    """Levels of objects and arrays in a JSON value: 0 for a scalar, 1 for {"a": 1}, 2 for {"a": [1]}."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


# A protobuf Struct holds every number as a 64-bit float: an integer beyond ±2**53 reached the agent rounded
# (9007199254740993 arrived as 9007199254740992), silently, while the timeline kept the exact value it was sent.
MAX_EXACT_INTEGER = 2**53 - 1


def _inexact_integer(value: Any) -> int | None:
    """The first integer in a JSON value that a float cannot hold exactly, or None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_EXACT_INTEGER:
            return item
    return None


def _check_depth(value: Any, what: str, field: str = "input") -> None:
    """What an agent could not receive as it was sent: JSON nested too deep, integers it would get rounded."""
    if (depth := json_depth(value)) > MAX_JSON_DEPTH:
        raise InvalidMessage(f"{what} nests {depth} levels deep; agents accept at most {MAX_JSON_DEPTH}", field=field)
    if (number := _inexact_integer(value)) is not None:
        shown = str(number) if len(str(number)) <= 30 else f"{str(number)[:27]}..."
        raise InvalidMessage(
            f"{what} holds the integer {shown}, which an agent would receive rounded (A2A carries numbers as "
            f"64-bit floats, exact up to ±{MAX_EXACT_INTEGER}); send it as a string",
            field=field,
        )


def check_metadata(metadata: dict[str, Any]) -> None:
    """A task's metadata nests no deeper than a message's (it travels as a protobuf Struct too: a federated task
    carries it to the peer that runs it)."""
    _check_depth(metadata, "the task's metadata", field="metadata")


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """The stored message shape: role user, parts spelled `{"kind": "text"|"data", ...}`.

    Every way in (API, console, federation) passes here, so this is where a message the agent could not be sent
    is refused: a part without text or data, text that is not a string, data that is not an object, JSON nested
    deeper than A2A carries. It accepts both part spellings (federation forwards A2A v1.0 parts, `{"text": …}`
    without a kind).
    """
    if not isinstance(message, dict) or not isinstance(message.get("parts") or [], list):
        raise InvalidMessage("a message is an object with a list of parts")
    parts = []
    for number, part in enumerate(message.get("parts") or [], start=1):
        if not isinstance(part, dict):
            raise InvalidMessage(f"part {number} must be an object with text or data, not {type(part).__name__}")
        kind = part.get("kind") or next((k for k in ("text", "data") if k in part), None)
        if kind not in ("text", "data") or kind not in part:
            raise InvalidMessage(f"a message part must hold text or data, not {sorted(part)}")
        if kind == "text" and not isinstance(part["text"], str):
            raise InvalidMessage(f"part {number}: 'text' must be a string, not {type(part['text']).__name__}")
        if kind == "data" and not isinstance(part["data"], dict):
            raise InvalidMessage(f"part {number}: 'data' must be a JSON object, not {type(part['data']).__name__}")
        _check_depth(part.get("data"), f"part {number}'s data")
        _check_depth(part.get("metadata"), f"part {number}'s metadata")
        parts.append({**part, "kind": kind})
    if not parts:
        raise InvalidMessage("a message needs at least one text or data part")
    _check_depth(message.get("metadata"), "the message's metadata")
    normalized = {**message, "role": "user", "parts": parts}
    return normalized


def input_size(message: dict[str, Any], metadata: dict[str, Any] | None = None) -> int:
    """Bytes of the compact JSON Hermes stores and sends for this input."""
    return jsonutil.encoded_size({"message": message, "metadata": metadata or {}})


def check_input_size(message: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    size = input_size(message, metadata)
    limit = settings.HERMES_MAX_TASK_INPUT_BYTES
    if size > limit:
        raise TaskInputTooLarge(size, limit)


@dataclass
class _Pending:
    """Events recorded in the current transaction, published together once it commits."""

    task: Task
    events: list[TaskEvent] = field(default_factory=list)
    state_changed: bool = False
    # False for a task's creation: nobody can watch a task whose id was not handed out yet, so only the org's
    # status stream hears of it (the events still reach `task_event_recorded`).
    to_task_stream: bool = True


def _lock(task: Task | Any) -> Task:
    task_id = getattr(task, "pk", task)
    return Task.objects.unscoped("locking a task already resolved by id").select_for_update().get(pk=task_id)


def _append(pending: _Pending, kind: str, data: dict[str, Any]) -> TaskEvent:
    # The caller holds the row lock, so last_seq + 1 is ours alone; the UniqueConstraint backs this up.
    task = pending.task
    task.last_seq += 1
    event = TaskEvent(organization_id=task.organization_id, task=task, seq=task.last_seq, kind=kind, data=data)
    pending.events.append(event)
    return event


def _problem(target: str, error: str, data: dict[str, Any]) -> str:
    """Why a task in `target` is not doing well, from what its state event says: the error it failed with, why it
    was refused, or failing those what the agent said when it failed; "" for any other state. (The data may come
    from a federation peer, so its shape is not taken for granted.)"""
    if error or target not in (TaskState.FAILED, TaskState.REJECTED):
        return error
    if target == TaskState.REJECTED and data.get("reason"):
        return str(data["reason"])
    message = data.get("message")
    parts = message.get("parts") if isinstance(message, dict) else None
    texts = [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    # An empty reason read as "nothing wrong": the a2a-sdk's server fails a polled task whose executor raised
    # without any message.
    return " ".join(texts) or _NO_REASON[target]


_NO_REASON: dict[str, str] = {
    TaskState.FAILED: "The agent reported the task failed without saying why.",
    TaskState.REJECTED: "The agent rejected the task without saying why.",
}


def _move(pending: _Pending, target: str, /, *, error: str = "", **data: Any) -> None:
    # Positional-only: `data` may be a federation peer's state data, whatever keys it holds.
    task = pending.task
    check_transition(task.state, target)
    now = timezone.now()
    previous = task.state
    task.state = target
    if target == TaskState.WORKING and task.started_at is None:
        task.started_at = now
    if target in TERMINAL_STATES:
        task.finished_at = now
    if target in TERMINAL_STATES or target in INTERRUPTED_STATES:
        # Nobody works on a finished task or one waiting for its caller: release the claim with the state.
        task.claimed_by, task.claimed_at, task.next_attempt_at = "", None, None
    # last_error belongs to the state the task is in: a task that completes (or is canceled, or waits for input)
    # after retried transport errors no longer reports the last of them (the retry events keep that history),
    # and one that fails says why it failed.
    error = str(error or "")
    task.last_error = _problem(target, error, data)[:4000]
    if error:
        data["error"] = error[:1000]
    pending.state_changed = True
    _append(pending, EventKind.STATE, {"from": previous, "to": target, **{k: v for k, v in data.items() if v}})


def _save(pending: _Pending, *fields: str) -> None:
    """Write the pending events and the task's changed fields, and announce them once committed."""
    task = pending.task
    TaskEvent.objects.bulk_create(pending.events)
    base = ["last_seq", "updated_at"] if pending.events else ["updated_at"]
    if pending.state_changed:
        base += ["state", "started_at", "finished_at", "claimed_by", "claimed_at", "next_attempt_at", "last_error"]
    task.save(update_fields=sorted({*base, *fields}))
    _announce(pending)


def _announce(pending: _Pending) -> None:
    """Once the transaction commits (at once outside one): metrics, the live streams and task_event_recorded."""
    if pending.events:
        events = list(pending.events)
        task = pending.task
        transaction.on_commit(lambda: _after_commit(task, events, pending.state_changed, pending.to_task_stream))


def _after_commit(task: Task, events: list[TaskEvent], state_changed: bool, to_task_stream: bool = True) -> None:
    if state_changed:
        agent_label = str(task.agent_id)
        TASKS.labels(state=task.state, agent=agent_label).inc()
        if task.state in TERMINAL_STATES:
            TASK_DURATION.labels(state=task.state, agent=agent_label).observe(
                (task.finished_at or timezone.now()).timestamp() - task.created_at.timestamp()
            )
    broadcast.publish(task, events if to_task_stream else [], state_changed=state_changed)
    for event in events:
        try:
            task_event_recorded.send(sender=Task, task=task, event=event)
        except Exception:  # a receiver's bug must not break the worker recording the timeline
            logger.exception("task_event_recorded receiver failed for %s#%s", task.pk, event.seq)


def _dispatch_after_commit(task: Task) -> None:
    def send() -> None:
        from apps.tasks.tasks import dispatch

        dispatch(task.pk)

    transaction.on_commit(send)


# --- Public actions ------------------------------------------------------------------------------------------


def require_federation_write(access: Access | None) -> None:
    """A task on a federated agent is a conversation with another org in this org's name: asking it (create),
    answering it (follow-up) and canceling it need federation:write as well as tasks:write, whichever way they are
    asked (the API, the console). `access` None: no person or key asks (federation's own code, a command)."""
    if access is None or access.allows("federation:write"):
        return
    # The details of every other 403 (apps.core.api.require_action): the scope a key lacks, the action a role may
    # not do.
    missing_scope = access.scopes is not None
    raise HermesAPIError(
        "Asking another org's agent, answering or canceling its task needs federation:write as well as tasks:write.",
        code="missing_scope" if missing_scope else "role_forbidden",
        status_code=403,
        details={"required_scope" if missing_scope else "required_action": "federation:write"},
    )


def create_task(
    *,
    org: Any,
    agent: Any,
    message: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    access: Access | None = None,
    created_by: Any = None,
    deadline: timedelta | None = None,
) -> Task:
    """Accept a task for `agent` on behalf of `org` and enqueue it once committed.

    `message` is a normalized A2A message ({"role": "user", "parts": [...]}). `access` (API/console) names who
    sent it; callers without a request (federation) pass `created_by` or nothing. Raises AgentNotUsable,
    InvalidMessage, TaskInputTooLarge or quotas.QuotaExceeded (429) before writing anything.
    """
    check_agent_usable(agent, org)
    if agent.is_federated:
        require_federation_write(access)
    message = normalize_message(message)
    metadata = metadata or {}
    check_metadata(metadata)
    check_input_size(message, metadata)
    deadline = deadline or timedelta(seconds=settings.HERMES_TASK_DEADLINE_SECONDS)
    user = access.user if access is not None else created_by
    now = timezone.now()
    quotas.reserve_task(org)  # tasks per day; fails open when Redis is down
    task = Task(
        organization_id=org.pk,
        agent=agent,
        input=message,
        metadata=metadata,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        api_key=access.api_key if access is not None else None,
        deadline_at=now + deadline,
        # No worker runs a federated task, so the sweeper must never see it as an undelivered job.
        next_attempt_at=None if agent.is_federated else now,
    )
    pending = _Pending(task, state_changed=True, to_task_stream=False)
    _append(pending, EventKind.STATE, {"from": None, "to": TaskState.SUBMITTED})
    _append(pending, EventKind.MESSAGE, {"role": "user", **message})
    entry = audit.entry("task.created", org=org, actor=user, access=access, target=task, agent_id=str(agent.pk))
    # The task (with its final last_seq), its first events and the audit row are one statement, atomic on its own
    # (the submit path's largest cost was its round trips). Only a federated task needs a transaction around it:
    # the federation outbox message written by the signal's receiver must commit with it.
    with transaction.atomic() if agent.is_federated else nullcontext():
        insert_together(task, *pending.events, entry)
        _announce(pending)
        if agent.is_federated:
            task_submitted_remotely.send(sender=Task, task=task, agent=agent, user=user, access=access)
        else:
            _dispatch_after_commit(task)
    return task


def cancel_task(task: Task, *, access: Access | None = None, reason: str = "canceled by the caller") -> Task:
    """Cancel a task that has not finished.

    A task no worker holds is canceled at once (and the agent's CancelTask is called by a job when the agent
    knows the task). A task a worker is running gets `cancel_requested_at`: from then on nothing the agent says is
    recorded (`record` moves the task to canceled instead), and the worker, which looks at the row every
    `tasks.WATCH_SECONDS`, stops its call to the agent, records `canceled` and calls CancelTask. A repeated cancel
    of such a task changes nothing; one that finds no worker holding it any more (a lost worker's claim was
    released) cancels it at once. Either way the cancel is audited once, when first asked.
    """
    with transaction.atomic():
        locked = _lock(task)
        if locked.is_terminal:
            raise TaskNotCancelable(f"the task is already {locked.state}")
        if locked.agent.is_federated:
            require_federation_write(access)
        if locked.cancel_requested_at is None:
            audit.record("task.canceled", org=locked.organization_id, access=access, target=locked)
            locked.cancel_requested_at = timezone.now()
        elif locked.claimed_by:
            # Asked before, and its worker is stopping it: the same answer, and no second audit row.
            return locked
        pending = _Pending(locked)
        fields = ["cancel_requested_at"]
        if not locked.claimed_by:
            # (A federated task is never claimed: its cancel is relayed by federation, which hears this event.)
            _move(pending, TaskState.CANCELED, reason=reason)
            if locked.remote_task_id:
                remote_id = locked.remote_task_id

                def cancel_remote() -> None:
                    from apps.tasks.tasks import cancel_remote_task

                    cancel_remote_task.delay(str(locked.pk), remote_id)

                transaction.on_commit(cancel_remote)
        _save(pending, *fields)
    return locked


def continue_task(task: Task, *, message: dict[str, Any], access: Access | None = None) -> Task:
    """Deliver a follow-up message to a task waiting in input-required (or auth-required).

    Raises TaskNotWaitingForInput, AgentNotUsable (the agent was made private by its owner org or deleted since
    the task was sent: the same rule as `create_task`), InvalidMessage or TaskInputTooLarge before writing
    anything."""
    message = normalize_message(message)
    check_input_size(message)
    with transaction.atomic():
        locked = _lock(task)
        if locked.state not in INTERRUPTED_STATES:
            raise TaskNotWaitingForInput(f"the task is {locked.state}, not waiting for input")
        check_agent_usable(locked.agent, locked.organization_id)
        if locked.agent.is_federated:
            require_federation_write(access)
        audit.record("task.continued", org=locked.organization_id, access=access, target=locked)
        pending = _Pending(locked)
        _append(pending, EventKind.MESSAGE, {"role": "user", **message})
        _move(pending, TaskState.WORKING, reason="follow-up message")
        if locked.agent.is_federated:
            # No worker here runs it: the follow-up travels to the executing org in this same transaction.
            _save(pending)
            task_follow_up_remotely.send(sender=Task, task=locked, message=message)
            return locked
        locked.pending_message = message
        locked.next_attempt_at = timezone.now()
        _save(pending, "pending_message", "next_attempt_at")
        _dispatch_after_commit(locked)
    return locked


# --- Recording what the agent does (called by workers) ------------------------------------------------------


@dataclass
class Observation:
    """One normalized thing an agent told us, ready to be recorded (built from the A2A client's updates)."""

    kind: str  # EventKind value
    data: dict[str, Any]
    state: str | None = None  # the A2A state the agent reported, if any
    remote_task_id: str = ""
    remote_context_id: str = ""


def record(task: Task | Any, observations: Iterable[Observation], *, worker: str = "") -> Task:
    """Append the agent's updates to the timeline and apply any state it reported.

    Finished is final: nothing is recorded after a task's terminal state — not on a task that ended while the
    agent still worked (its deadline failed it), nor what follows a terminal state within `observations`; it is
    dropped with a log line. A task whose cancel was requested (and answered 202) moves to canceled here, and what
    the agent said is dropped the same way. A state the task cannot otherwise move to (the agent repeats itself,
    or says `submitted` after the worker moved the task to working) is not an error either: the row's state stays
    as it is, and a message that came with it is recorded as a `message` event.
    """
    with transaction.atomic():
        locked = _lock(task)
        pending = _Pending(locked)
        fields: set[str] = set()
        ended_before = locked.state if locked.is_terminal else ""
        if locked.cancel_requested_at is not None and not locked.is_terminal:
            ended_before = "canceled by the caller"
            locked.pending_message = None
            fields.add("pending_message")
            _move(pending, TaskState.CANCELED, reason="canceled by the caller")
        dropped: list[Observation] = []
        for obs in observations:
            # Kept even from what is dropped: the agent's task id is what its CancelTask needs (a cancel that
            # came before the agent's first answer).
            if obs.remote_task_id and obs.remote_task_id != locked.remote_task_id:
                locked.remote_task_id = obs.remote_task_id
                fields.add("remote_task_id")
            if obs.remote_context_id and obs.remote_context_id != locked.remote_context_id:
                locked.remote_context_id = obs.remote_context_id
                fields.add("remote_context_id")
            if locked.is_terminal:
                dropped.append(obs)
                continue
            # What an agent (or a peer) said was decoded by its client, not by Hermes' own JSON reader: a NUL or
            # a lone surrogate in it would fail the INSERT and lose the whole answer for one character.
            data = _within_event_limit(jsonutil.storable(obs.data))
            if obs.kind != EventKind.STATE:
                _append(pending, obs.kind, data)
            if obs.state and obs.state != locked.state:
                if obs.state in _allowed_from(locked.state):
                    # A state event says only what the state's schema holds: a progress line's role and parts
                    # were recorded above, as their own event. (A federated task's failure or refusal reason
                    # arrives in its state's data.)
                    _move(pending, obs.state, **(data if obs.kind == EventKind.STATE else {}))
                    continue
                # A state Hermes will not move to: typically the agent's `submitted` (TaskUpdater.submit(message)),
                # which arrives after the worker already moved the task to working. The state is not applied, but
                # what the agent said with it is kept, as with a repeated state below.
                logger.debug("ignoring agent state %s for task %s in %s", obs.state, locked.pk, locked.state)
            if obs.kind == EventKind.STATE and data.get("message"):
                # The same state (or one not applied), but the agent said something with it (e.g. working + a
                # status message).
                _append(pending, EventKind.MESSAGE, data["message"])
        if dropped:
            # Like federation's events for a requester's task that has ended (apps.federation.remote_tasks).
            what = ", ".join(
                str(obs.state if obs.kind == EventKind.STATE and obs.state else obs.kind) for obs in dropped
            )
            logger.info(
                "task %s is %s; dropped what arrived after that: %s", locked.pk, ended_before or locked.state, what
            )
        if worker and locked.claimed_by == worker:
            locked.heartbeat_at = timezone.now()
            fields.add("heartbeat_at")
            if locked.pending_message is not None:
                # The agent answered, so the follow-up was delivered: a re-dispatch must not send it again.
                locked.pending_message = None
                fields.add("pending_message")
        if pending.events or fields:
            _save(pending, *fields)
    return locked


def _within_event_limit(data: dict[str, Any]) -> dict[str, Any]:
    """`data` within HERMES_MAX_EVENT_BYTES (see fit_parts). An agent's output had no limit: a 100 MB artifact was
    one row, one API answer and one channel-layer message, and a message that large disconnected the Redis
    pub/sub connection every live stream of the process shares."""
    return fit_parts(data, settings.HERMES_MAX_EVENT_BYTES, limit_name="event limit")


def fit_parts(data: dict[str, Any], limit: int, *, limit_name: str) -> dict[str, Any]:
    """`data` (an event's) with every part (of an artifact, a progress line, a state's message) that would take it
    past `limit` bytes replaced by a text part saying what was left out, and why (`limit_name`: "event limit")."""
    if jsonutil.encoded_size(data) <= limit:
        return data
    nested = isinstance(data.get("message"), dict)
    parts = (data["message"] if nested else data).get("parts")
    if not isinstance(parts, list):
        return data
    room = limit - jsonutil.encoded_size(_with_parts(data, [], nested=nested))
    kept: list[Any] = []
    for part in parts:
        size = jsonutil.encoded_size(part) + 1  # and its comma
        if size > room:
            kind = part.get("kind", "unknown") if isinstance(part, dict) else "unknown"
            note = f"[a {kind} part of {size - 1:,} bytes was not kept: over the {limit:,}-byte {limit_name}]"
            part = {"kind": "text", "text": note, "metadata": {"hermes_dropped_bytes": size - 1}}
            size = jsonutil.encoded_size(part) + 1
        room -= size
        kept.append(part)
    return _with_parts(data, kept, nested=nested)


def _with_parts(data: dict[str, Any], parts: list[Any], *, nested: bool) -> dict[str, Any]:
    return {**data, "message": {**data["message"], "parts": parts}} if nested else {**data, "parts": parts}


def _allowed_from(state: str) -> frozenset[str]:
    from apps.tasks.models import ALLOWED_TRANSITIONS

    return ALLOWED_TRANSITIONS.get(state, frozenset())


def note_waiting_error(org_id: Any, task_id: Any, error: str) -> None:
    """Show why a submitted task still waits on something outside its worker (a federated request held in the
    dead-letter queue), or clear it with "". Only while the task is submitted: any state change sets
    `last_error` for the new state, and this is not one."""
    Task.objects.for_org(org_id).filter(pk=task_id, state=TaskState.SUBMITTED).update(
        last_error=error[:4000], updated_at=timezone.now()
    )


def note_agent_cancel_failed(org_id: Any, task_id: Any, error: str) -> None:
    """Say on a canceled task that the agent's CancelTask failed (refused, not supported, unreachable), so the
    agent may still be working on its side. On the row, not as an event: nothing follows a final state in the
    timeline, and before this only the worker's log knew."""
    Task.objects.for_org(org_id).filter(pk=task_id, state=TaskState.CANCELED, last_error="").update(
        last_error=f"Canceled here, but the agent's CancelTask failed: {error}"[:4000], updated_at=timezone.now()
    )


def finish(task: Task | Any, state: str, *, error: str = "", **data: Any) -> Task:
    """Move a task to a terminal (or interrupted) state from a worker or the sweeper; no-op if already terminal."""
    with transaction.atomic():
        locked = _lock(task)
        if locked.is_terminal:
            return locked
        pending = _Pending(locked)
        locked.pending_message = None
        _move(pending, state, error=error, **data)
        _save(pending, "pending_message")
    return locked


def note_retry(task: Task | Any, *, reason: str, error: str, attempt: int, delay: float) -> Task:
    """Record that a run will be retried (transport error, lost worker) and release the claim."""
    with transaction.atomic():
        locked = _lock(task)
        if locked.is_terminal:
            return locked
        pending = _Pending(locked)
        _append(
            pending,
            EventKind.RETRY,
            {"reason": reason, "error": error[:1000], "attempt": attempt, "delay": round(delay, 3)},
        )
        locked.last_error = error[:4000]
        locked.claimed_by, locked.claimed_at = "", None
        locked.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        _save(pending, "last_error", "claimed_by", "claimed_at", "next_attempt_at")
    return locked
