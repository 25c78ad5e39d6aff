"""Cross-org tasks over federation.

Requester (org A)                                  Executor (org B, here or on a peer)
  create_task on A's federated Agent row
  (tasks' `task_submitted_remotely`, same tx)
    -> task_request message + RemoteTask       ->  handler: apps.tasks.actions.create_task on B's agent,
                                                    FederatedTask links the task to the requester
                                                    every recorded task event (tasks' `task_event_recorded`
  handler: RemoteTaskEvent by remote seq,      <-   signal) -> task_result message, correlated to the request
  applied in seq order to A's own Task
  A cancels its Task -> task_cancel message    ->  handler: cancel_task on B's task
  A answers input-required -> task_input       ->  handler: continue_task on B's task

So the requester follows the remote task in its ordinary task views (list, detail, websocket, SSE, API): the
events arrive as task results and are recorded on its own Task with `apps.tasks.actions.record`.

A request the executor cannot run (unknown agent, agent not usable, quota, input too large) is answered with a
single `task_result` at seq 0 whose state is `rejected`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.agents.models import Agent
from apps.core import jsonutil
from apps.federation import actions, selectors
from apps.federation.addresses import Address
from apps.federation.handlers import Malformed, Unrelated, register
from apps.federation.inbound import RESULT_DATA_BYTES
from apps.federation.models import (
    FederatedTask,
    InboxEntry,
    MessageType,
    Outbox,
    OutboxStatus,
    RemoteTask,
    RemoteTaskEvent,
)
from apps.orgs.quotas import QuotaExceeded
from apps.tasks import actions as task_actions
from apps.tasks.models import TERMINAL_STATES, EventKind, Task, TaskState

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "canceled", "rejected"})


def _report(entry: InboxEntry, *, agent_slug: str, payload: dict[str, Any]) -> None:
    actions.send_message(
        org=entry.organization,
        recipient=entry.sender,
        payload=payload,
        type=MessageType.TASK_RESULT,
        sender_agent=agent_slug,
        correlation_id=entry.message_id,
        reply=True,
    )


def _reject(entry: InboxEntry, reason: str) -> None:
    _report(
        entry,
        agent_slug=entry.recipient_agent,
        payload={
            "task_id": None,
            "seq": 0,
            "kind": "state",
            "data": {"from": None, "to": "rejected", "reason": reason},
            "state": "rejected",
        },
    )


# Why the executor refuses a request by its own rules (what POST /tasks would answer with a 4xx).
_REFUSALS = (
    task_actions.AgentNotUsable,
    task_actions.InvalidMessage,
    task_actions.TaskInputTooLarge,
    QuotaExceeded,
    ValidationError,
)


@register(MessageType.TASK_REQUEST)
def start_requested_task(entry: InboxEntry) -> None:
    """Executor side: run the requested task on our agent, or say why not."""
    # Only the org's own agents: a federated agent row (its way to ask someone else's agent) run for a requester
    # would relay the request onward under this org's identity, policy and quota — an open relay.
    own = Agent.objects.for_org(entry.organization).filter(federation_address="")
    agent = own.filter(slug=entry.recipient_agent).first()
    if agent is None:
        _reject(entry, f"{entry.organization.slug} has no agent '{entry.recipient_agent}'")
        return
    if selectors.cancel_before_request(entry) is not None:
        # The requester canceled while this request was on its way, and the cancel came first (it found nothing
        # to cancel then): a task started now would run for nobody.
        _reject(entry, "canceled by the requester before the request arrived")
        return
    payload = entry.payload
    message = payload.get("message")
    if not isinstance(message, dict):
        _reject(entry, "the request has no A2A message")
        return
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    metadata = {**metadata, "federation": {"requester": entry.sender, "request_id": str(entry.message_id)}}
    try:
        with transaction.atomic():
            task = task_actions.create_task(org=entry.organization, agent=agent, message=message, metadata=metadata)
            # Linked in the same transaction: the task's first events are announced after commit, and the signal
            # receiver must find this row to report them.
            FederatedTask.objects.create(
                organization=entry.organization,
                task_id=str(task.pk),
                inbox_entry=entry,
                agent_slug=agent.slug,
                reply_to=entry.sender,
                correlation_id=entry.message_id,
            )
    except _REFUSALS as exc:  # the executor's own rules: said in their words to the requester
        logger.info("federation: task request %s rejected: %s", entry.message_id, exc)
        _reject(entry, str(exc)[:300])
    except Exception as exc:  # anything else: a bug here; its type helps whoever reads the requester's task
        logger.exception("federation: task request %s failed", entry.message_id)
        _reject(entry, f"{type(exc).__name__}: {exc}"[:300])


def send_task_request(
    sender: Any = None, *, task: Task, agent: Any, user: Any = None, access: Any = None, **_: Any
) -> None:
    """Requester side (receiver of tasks' `task_submitted_remotely`, inside create_task's transaction): write the
    task request for the federated agent and the RemoteTask that correlates its results with `task`.

    A refusal raised here (policy, unknown peer …) rolls the whole task back; create_task checked federation:write
    before (`tasks.actions.require_federation_write`)."""
    request = actions.send_message(
        org=task.organization,
        recipient=agent.federation_address,
        payload={"message": task.input, "metadata": task.metadata},
        type=MessageType.TASK_REQUEST,
        sender_agent=actions.current_sender_agent(),
        actor=user,
    )
    RemoteTask.objects.create(
        organization_id=task.organization_id,
        request=request,
        agent_address=agent.federation_address,
        task_id=str(task.pk),
    )


def _task_of_request(request: Any) -> RemoteTask | None:
    remote = RemoteTask.objects.for_org(request.organization_id).filter(request=request).first()
    return remote if remote is not None and remote.task_id else None


def _set_delivery_error(remote: RemoteTask, error: str) -> None:
    """Show (or, with "", clear) why the request is not delivered, on the task and on the remote-task mirror,
    while they still wait for it."""
    now = timezone.now()
    task_actions.note_waiting_error(remote.organization_id, remote.task_id, error)
    RemoteTask.objects.for_org(remote.organization_id).filter(pk=remote.pk).exclude(state__in=TERMINAL).update(
        error=error[:1000], updated_at=now
    )


def request_dead_lettered(request: Any, reason: str) -> None:
    """Requester side: the task request itself could not be delivered. Say so on the task's timeline and as its
    last error (it stays submitted: a requeue from the dead-letter queue can still deliver it; a cancel settles
    the dead letter, see `relay_cancel`; otherwise its deadline fails it). The federated agent's presence is not
    touched: a refusal is the peer's answer about this request, not a sign the agent is down."""
    remote = _task_of_request(request)
    if remote is None:
        return
    error = f"the task request could not be delivered to {remote.agent_address}: {reason}"
    data = {"reason": "request_dead_lettered", "error": error[:1000], "message_id": str(request.pk)}
    task_actions.record(remote.task_id, [task_actions.Observation(kind=EventKind.ERROR, data=data)])
    _set_delivery_error(remote, error)


def request_requeued(request: Any) -> None:
    """Requester side: the dead-lettered request is being delivered again; its delivery error no longer holds."""
    remote = _task_of_request(request)
    if remote is not None:
        _set_delivery_error(remote, "")


def request_discarded(request: Any, reason: str) -> None:
    """Requester side: the dead-lettered request was given up for good, so its task can never run: fail it now
    rather than at its deadline. (A no-op when the task ended first — its cancel is what discarded the request.)"""
    remote = _task_of_request(request)
    if remote is not None:
        error = f"the task request to {remote.agent_address} was discarded from the dead-letter queue: {reason}"
        task_actions.finish(remote.task_id, TaskState.FAILED, error=error, reason="request_discarded")


def _gives_up_locally(event: Any) -> bool:
    """The requester's own end of a federated task: canceled by its caller, or failed by its deadline (no worker
    here ever fails it otherwise). A state mirrored from the executor carries `remote_seq` and is not relayed."""
    data = event.data if isinstance(event.data, dict) else {}
    ended = data.get("to") in (TaskState.CANCELED, TaskState.FAILED)
    return event.kind == EventKind.STATE and ended and "remote_seq" not in data


def _relay(remote: RemoteTask, type: str, payload: dict[str, Any]) -> None:
    actions.send_message(
        org=remote.organization,
        recipient=remote.agent_address,
        payload=payload,
        type=type,
        # From whoever made the request: the executor knows the requester as the request's sender (an agent of
        # ours when it named one), and its agent-specific rules read the relay as they read the request.
        sender_agent=remote.request.sender_agent,
        correlation_id=remote.request_id,
        # It belongs to a request that already passed the outbound policy; a policy changed since must not
        # strand the remote task (a cancel that cannot leave would let it run on unwanted).
        reply=True,
    )


def _remote_of(task: Task) -> RemoteTask | None:
    rows = RemoteTask.objects.for_org(task.organization_id).select_related("organization", "request")
    return rows.filter(task_id=str(task.pk)).first()


def relay_cancel(task: Task) -> None:
    """Requester side: the org canceled its task on a federated agent (or its deadline passed); ask the executor
    to cancel its task — unless the request never reached it."""
    remote = _remote_of(task)
    if remote is None or remote.state in TERMINAL:
        return
    request = (
        Outbox.objects.for_org(task.organization_id)
        .select_related("message", "message__peer", "organization")
        .filter(message_id=remote.request_id)
        .first()
    )
    if request is not None and request.status in (OutboxStatus.DEAD, OutboxStatus.DISCARDED):
        # Nothing runs on the executor to cancel (a cancel would only be refused, as the request was, and
        # dead-letter in turn); and a dead request requeued later would start a task nobody waits for. So the
        # dead letter is settled: discarded, with an audit event saying why.
        actions.discard([request], reason=f"its task {task.pk} ended here ({task.state}) before delivery")
        why = f"{task.state} here before the request was delivered ({request.last_error or request.status})"
        _settle(remote, task.state, why)
        return
    # Still waiting for an attempt (a peer that was down, a backoff): the request is taken back, so it cannot reach
    # the executor after the cancel (which would arrive first, find nothing, and let the late request start a task
    # nobody waits for). If an earlier attempt may have reached the executor before failing here (a timeout), the
    # cancel is sent as well.
    waiting = request is not None and request.status in (OutboxStatus.PENDING, OutboxStatus.FAILED)
    if waiting and actions.withdraw(request, reason=f"its task {task.pk} ended here ({task.state}) before delivery"):
        if not selectors.may_have_arrived(request):
            # No attempt, or every one failed before the request left (connection refused, DNS failure): a
            # cancel could only be refused as answering nothing, and dead-letter as noise.
            _settle(remote, task.state, f"{task.state} here before the request was sent")
            return
        # An earlier attempt may have reached the executor before failing here (a timeout): cancel there too. The
        # mirror ends now all the same; the executor's own `canceled`, if it had the request, is kept beside it.
        _settle(
            remote,
            task.state,
            f"{task.state} here before the request was delivered; a cancel was sent in case "
            "an earlier attempt reached the executor",
        )
    _relay(remote, MessageType.TASK_CANCEL, {"reason": "canceled by the requester"})


def _settle(remote: RemoteTask, state: str, why: str) -> None:
    """The request never ran on the executor: the mirror ends here with the requester's own state."""
    RemoteTask.objects.for_org(remote.organization_id).filter(pk=remote.pk).update(
        state=state, error=why[:1000], updated_at=timezone.now()
    )


def request_withdrawn_in_flight(request: Any) -> None:
    """Requester side: the request's attempt failed after its task ended here (the cancel went out meanwhile), so
    it was withdrawn: the mirror ends with the task's state, as when a waiting request is withdrawn."""
    remote = _task_of_request(request)
    if remote is None or remote.state in TERMINAL:
        return
    task = Task.objects.for_org(remote.organization_id).filter(pk=remote.task_id).first()
    if task is not None and task.is_terminal:
        _settle(
            remote,
            task.state,
            f"{task.state} here while the request was being sent; a cancel was sent in case it reached the executor",
        )


def request_abandoned(request: Any) -> bool:
    """Requester side, after a failed attempt to deliver a task request: has its task ended here meanwhile (a
    cancel while the attempt was in flight)? Then the request is not retried."""
    remote = _task_of_request(request)
    if remote is None:
        return False
    return Task.objects.for_org(remote.organization_id).filter(pk=remote.task_id, state__in=TERMINAL_STATES).exists()


def relay_follow_up(sender: Any = None, *, task: Task, message: dict[str, Any], **_: Any) -> None:
    """Requester side (receiver of tasks' `task_follow_up_remotely`, inside continue_task's transaction): send
    the follow-up for the executor's task, which waits for input."""
    remote = _remote_of(task)
    if remote is None:
        raise LookupError(f"task {task.pk} has no federation request to follow up")
    _relay(remote, MessageType.TASK_INPUT, {"message": message})


def report_task_event(sender: Any = None, *, task: Any, event: Any, **_: Any) -> None:
    """Receiver of tasks' `task_event_recorded`. Executor side: forward a federated task's event to the
    requester. Requester side: relay a cancel of a task on a federated agent."""
    if _gives_up_locally(event):
        # Requester side (relay_cancel finds no request for any other task). Not decided by the task's metadata:
        # its `federation` key is the caller's own on this side, and a caller who set it kept the cancel here.
        relay_cancel(task)
    if "federation" not in (getattr(task, "metadata", None) or {}):
        return  # executor side marks its tasks' metadata; no lookup for the common case
    link = FederatedTask.objects.for_org(task.organization_id).filter(task_id=str(task.pk)).first()
    if link is None:
        return
    entry = InboxEntry.objects.for_org(task.organization_id).select_related("organization").get(pk=link.inbox_entry_id)
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    state = data.get("to") if event.kind == "state" else None
    data = _fit_result(data, event)
    _report(
        entry,
        agent_slug=link.agent_slug,
        payload={
            "task_id": str(task.pk),
            "seq": event.seq,
            "kind": event.kind,
            "data": data,
            "state": state or task.state,
        },
    )


def _fit_result(data: dict[str, Any], event: Any) -> dict[str, Any]:
    """The event's data as the task result can carry it. An event within this instance's HERMES_MAX_EVENT_BYTES
    could still make an envelope the requester refuses (413 `too_large`): the result was dead-lettered at once and
    the requester's task waited for it until its deadline. A part that does not fit is replaced by a note saying
    its size, as the event limit does; what has no parts keeps only what the requester's timeline needs."""
    fitted = task_actions.fit_parts(data, RESULT_DATA_BYTES, limit_name="federation message limit")
    if jsonutil.encoded_size(fitted) <= RESULT_DATA_BYTES:
        return fitted
    size = jsonutil.encoded_size(data)
    note = f"[event {event.seq} ({event.kind}, {size:,} bytes) was not relayed: over the federation message limit]"
    kept: dict[str, Any] = {k: data[k] for k in ("from", "to") if k in data and event.kind == EventKind.STATE}
    return {**kept, "note": note, "hermes_dropped_bytes": size}


@register(MessageType.TASK_RESULT)
def mirror_task_result(entry: InboxEntry) -> None:
    """Requester side: keep the remote event by its remote seq, then apply whatever is now in order to the
    requester's own task."""
    remote = (
        RemoteTask.objects.for_org(entry.organization)
        .select_for_update()
        .filter(request_id=entry.correlation_id)
        .first()
    )
    if remote is None:
        raise Unrelated(f"no remote task for request {entry.correlation_id}")
    # Only the org the request went to reports on it: a request id is no secret (the executor's members see it
    # in the task's metadata), so another org or peer allowed to message us could otherwise write its timeline.
    if Address.parse(entry.sender).org_address() != Address.parse(remote.agent_address).org_address():
        raise Unrelated(f"a result for request {entry.correlation_id} from {entry.sender}, not from its executor")
    payload = entry.payload
    seq, kind, state = _checked_result(payload)
    if seq == 0 and state != TaskState.REJECTED:
        raise Malformed(f"seq 0 is the executor's rejection; this result says {state or 'no state'}")
    try:
        with transaction.atomic():
            event = RemoteTaskEvent.objects.create(
                organization=entry.organization,
                remote_task=remote,
                seq=seq,
                kind=kind,
                data=payload.get("data") if isinstance(payload.get("data"), dict) else {},
                state=state[:20],
            )
    except IntegrityError:
        return  # already mirrored (the same event reported twice)
    # The executor answers only a request it received: whatever became of its receipt (unsigned, lost, an attempt
    # still retrying), the request is delivered, not withdrawn or dead-lettered.
    if actions.delivered_by_results(remote.request_id, org=entry.organization):
        _set_delivery_error(remote, "")
    fields = ["updated_at"]
    if payload.get("task_id") and not remote.remote_task_id:
        remote.remote_task_id = str(payload["task_id"])[:100]
        fields.append("remote_task_id")
    if seq > remote.last_seq:
        remote.last_seq = seq  # what arrived; `applied_seq` is how far the timeline is applied
        fields.append("last_seq")
    applied = _apply_in_order(remote, event)
    # The mirror's state is the state of the last event applied, not of the latest that arrived: after a gap
    # (results dead-lettered on the way, then only a later one requeued) it would say "completed" while the
    # requester's task still waits for the events in between. A terminal state is never left.
    latest = next((e.state for e in reversed(applied) if e.state), "")
    if latest and remote.state not in TERMINAL:
        remote.state = latest[:20]
        fields.append("state")
        if latest == "rejected":
            remote.error = str((payload.get("data") or {}).get("reason", ""))[:1000]
            fields.append("error")
    if applied and applied[-1].seq:
        fields.append("applied_seq")
    remote.save(update_fields=fields)
    # The remote agent just reported: that is what "online" means for an agent reached through federation. A
    # rejection (seq 0) comes from the executing org, not from its agent (which may not even exist): it is shown
    # as the agent's last error instead.
    federated = Agent.objects.for_org(entry.organization).filter(federation_address=remote.agent_address)
    if seq == 0:
        federated.update(last_error_at=timezone.now(), last_error=f"rejected: {remote.error}"[:1000])
    else:
        federated.update(last_seen_at=timezone.now())


_MAX_SEQ = 2**31 - 1
_STATES = frozenset(TaskState.values)


def _checked_result(payload: dict[str, Any]) -> tuple[int, str, str]:
    """seq, kind and state of a task_result, or Malformed saying which is wrong."""
    seq, kind, state = payload.get("seq", 0), payload.get("kind"), payload.get("state") or ""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
        raise Malformed(f"the result's seq must be a whole number from 0 to {_MAX_SEQ}, not {str(seq)[:40]!r}")
    if kind not in EventKind.values:
        raise Malformed(f"the result's kind must be one of {', '.join(EventKind.values)}, not {str(kind)[:40]!r}")
    if state and state not in _STATES:
        raise Malformed(f"the result's state must be an A2A task state, not {str(state)[:40]!r}")
    return seq, kind, state


def _apply_in_order(remote: RemoteTask, arrived: RemoteTaskEvent) -> list[RemoteTaskEvent]:
    """Apply every mirrored event that directly follows the last one applied (the remote lock is held): record it
    on the requester's task and advance `remote.applied_seq`. A rejection (seq 0) applies at once. Returns the
    events applied, in order."""
    if arrived.seq == 0:
        ready = [arrived]
    else:
        ready = []
        expected = remote.applied_seq + 1
        for event in remote.events.filter(seq__gt=remote.applied_seq).order_by("seq"):
            if event.seq != expected:
                break  # a gap: a later task result fills it and applies the rest
            ready.append(event)
            expected += 1
        if not ready:
            return []
        remote.applied_seq = ready[-1].seq
    if not remote.task_id:
        return ready  # a request made before remote tasks became tasks: the mirror alone shows it
    observations = [obs for obs in map(_observation, ready) if obs is not None]
    if observations and _task_has_ended(remote):
        # The requester's task ended here (canceled, or failed by its deadline) while the executor was still
        # running: its progress and messages are not appended after the end. States still go to `record`, which
        # keeps a terminal state as it is; the raw mirror (RemoteTaskEvent) keeps everything.
        dropped = [obs.kind for obs in observations if obs.kind != EventKind.STATE]
        if dropped:
            logger.info(
                "federation: task %s has ended; dropped %s from %s", remote.task_id, dropped, remote.agent_address
            )
        observations = [obs for obs in observations if obs.kind == EventKind.STATE]
    if observations:
        task_actions.record(remote.task_id, observations)
    return ready


def _task_has_ended(remote: RemoteTask) -> bool:
    state = Task.objects.for_org(remote.organization_id).filter(pk=remote.task_id).values_list("state", flat=True)
    return state.first() in TERMINAL_STATES


def _observation(event: RemoteTaskEvent) -> task_actions.Observation | None:
    data = dict(event.data)
    if event.kind == EventKind.STATE:
        target = str(data.pop("to", "") or "")
        data.pop("from", None)
        if target in ("", TaskState.SUBMITTED):
            return None  # the requester's task was submitted when it asked
        return task_actions.Observation(kind=EventKind.STATE, data={**data, "remote_seq": event.seq}, state=target)
    if event.kind == EventKind.MESSAGE and data.get("role") == "user":
        return None  # the requester's own input, already on its timeline
    return task_actions.Observation(kind=event.kind, data=data)


def _requested_task(entry: InboxEntry) -> Task | None:
    """Executor side: the task run for the request `entry` is correlated to — only for the org that asked (any
    of its agents: see selectors.federated_task_for). None when that request was rejected (no task ran for it);
    Unrelated, recorded on the entry and logged as a warning, when it names no request of that org at all."""
    org, correlation_id, sender, peer = entry.organization, entry.correlation_id, entry.sender, entry.peer
    link = selectors.federated_task_for(org, correlation_id=correlation_id, sender=sender, peer=peer)
    if link is not None:
        return Task.objects.for_org(org).filter(pk=link.task_id).first()
    request = selectors.request_entry_for(org, correlation_id=correlation_id, sender=sender, peer=peer)
    if request is not None and request.handled_at is not None:
        # We answered the request with a rejection, which the requester had not heard of yet: nothing runs here.
        logger.info("federation: %s for request %s, which was rejected", entry.type, entry.correlation_id)
        return None
    # Said where it shows (the inbox entry's handling error, a warning): a cancel or an answer dropped in silence
    # left a task running for nobody, or the requester's task waiting for ever.
    why = "its request is not handled yet" if request is not None else "no task runs here for a request of that org"
    if entry.type == MessageType.TASK_CANCEL:
        # A cancel that overtook its request stays on record: start_requested_task refuses the request for it.
        why += " (the request will be refused)" if request is not None else " yet (the request is refused if it comes)"
    raise Unrelated(f"a {entry.type} for request {entry.correlation_id} from {entry.sender}: {why}")


@register(MessageType.TASK_CANCEL)
def cancel_requested_task(entry: InboxEntry) -> None:
    """Executor side: the requester canceled; cancel the task run for it (a finished task stays finished)."""
    task = _requested_task(entry)
    if task is None:
        return
    # A task that finished first stays finished; its terminal event already went back.
    with contextlib.suppress(task_actions.TaskNotCancelable):
        task_actions.cancel_task(task, reason=f"canceled by the requester {entry.sender}")


@register(MessageType.TASK_INPUT)
def continue_requested_task(entry: InboxEntry) -> None:
    """Executor side: the requester answered the agent's question; deliver it to the waiting task."""
    task = _requested_task(entry)
    message = entry.payload.get("message")
    if task is None or not isinstance(message, dict):
        return
    try:
        task_actions.continue_task(task, message=message)
    except (task_actions.TaskNotWaitingForInput, task_actions.InvalidMessage, task_actions.TaskInputTooLarge) as exc:
        # Our task moved on meanwhile (canceled, failed by its deadline): its events, already on their way back,
        # tell the requester where it really is.
        logger.info("federation: follow-up for task %s not delivered: %s", task.pk, exc)
    except task_actions.AgentNotUsable:
        # The agent was deleted (or made private) here while the task waited for this answer: it cannot go on.
        # Failing it tells the requester, whose task moved to working when it answered and otherwise waited for its
        # deadline, with no error. The same words for deleted and private, as the API's `agent_unavailable`.
        task_actions.finish(
            task, TaskState.FAILED, error="the agent is no longer available, so it cannot take the reply"
        )


def connect_task_signal() -> None:
    """Subscribe to the tasks app's signals (called from FederationConfig.ready)."""
    task_actions.task_event_recorded.connect(report_task_event, dispatch_uid="federation-report-task-event")
    task_actions.task_submitted_remotely.connect(send_task_request, dispatch_uid="federation-send-task-request")
    task_actions.task_follow_up_remotely.connect(relay_follow_up, dispatch_uid="federation-relay-follow-up")
