"""Cross-org tasks over federation.

Requester (org A)                                  Executor (org B, here or on a peer)
  request_remote_task -> task_request message  ->  handler: apps.tasks.actions.create_task on B's agent,
  RemoteTask (mirror) created                       FederatedTask links the task to the requester
                                                    every recorded task event (tasks' `task_event_recorded`
  handler: RemoteTaskEvent by remote seq       <-   signal) -> task_result message, correlated to the request

A request the executor cannot run (unknown agent, agent not usable, quota, input too large) is answered with a
single `task_result` at seq 0 whose state is `rejected`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction

from apps.federation import actions
from apps.federation.handlers import register
from apps.federation.models import (
    FederatedTask,
    InboxEntry,
    MessageType,
    RemoteTask,
    RemoteTaskEvent,
)

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


@register(MessageType.TASK_REQUEST)
def start_requested_task(entry: InboxEntry) -> None:
    """Executor side: run the requested task on our agent, or say why not."""
    from apps.agents.models import Agent

    agent = Agent.objects.for_org(entry.organization).filter(slug=entry.recipient_agent).first()
    if agent is None:
        _reject(entry, f"{entry.organization.slug} has no agent '{entry.recipient_agent}'")
        return
    from apps.tasks import actions as task_actions

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
    except Exception as exc:  # AgentNotUsable, TaskInputTooLarge, QuotaExceeded, a validation error ...
        logger.info("federation: task request %s rejected: %s", entry.message_id, exc)
        _reject(entry, f"{type(exc).__name__}: {exc}"[:300])


def report_task_event(sender: Any = None, *, task: Any, event: Any, **_: Any) -> None:
    """Executor side (receiver of tasks' `task_event_recorded`): forward a federated task's event."""
    if "federation" not in (getattr(task, "metadata", None) or {}):
        return  # not a task run for another org: no lookup for the common case
    link = FederatedTask.objects.for_org(task.organization_id).filter(task_id=str(task.pk)).first()
    if link is None:
        return
    entry = InboxEntry.objects.for_org(task.organization_id).select_related("organization").get(pk=link.inbox_entry_id)
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    state = data.get("to") if event.kind == "state" else None
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


@register(MessageType.TASK_RESULT)
def mirror_task_result(entry: InboxEntry) -> None:
    """Requester side: append the remote event to the mirror, in remote sequence order."""
    remote = (
        RemoteTask.objects.for_org(entry.organization)
        .select_for_update()
        .filter(request_id=entry.correlation_id)
        .first()
    )
    if remote is None:
        raise LookupError(f"no remote task for request {entry.correlation_id}")
    payload = entry.payload
    seq = int(payload.get("seq") or 0)
    state = str(payload.get("state") or "")
    try:
        with transaction.atomic():
            RemoteTaskEvent.objects.create(
                organization=entry.organization,
                remote_task=remote,
                seq=seq,
                kind=str(payload.get("kind") or "event")[:30],
                data=payload.get("data") if isinstance(payload.get("data"), dict) else {},
                state=state[:20],
            )
    except IntegrityError:
        return  # already mirrored (the same event reported twice)
    fields = ["updated_at"]
    if payload.get("task_id") and not remote.remote_task_id:
        remote.remote_task_id = str(payload["task_id"])[:100]
        fields.append("remote_task_id")
    # Events may arrive out of order (parallel deliveries); the latest sequence number decides the state, except
    # that a terminal state is never left.
    if state and (seq >= remote.last_seq or state in TERMINAL) and remote.state not in TERMINAL:
        remote.state = state[:20]
        remote.last_seq = max(seq, remote.last_seq)
        fields += ["state", "last_seq"]
        if state == "rejected":
            remote.error = str((payload.get("data") or {}).get("reason", ""))[:1000]
            fields.append("error")
    remote.save(update_fields=fields)


def connect_task_signal() -> None:
    """Subscribe to the tasks app's event signal (called from FederationConfig.ready)."""
    from apps.tasks.actions import task_event_recorded

    task_event_recorded.connect(report_task_event, dispatch_uid="federation-report-task-event")
