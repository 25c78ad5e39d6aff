"""One worker's conversation with an agent about one task, recorded as it happens.

The A2A protocol work (SDK client, v1.0/v0.3 method names, SSE vs SendMessage + GetTask polling) lives in
`apps.agents.client`; this module decides what to ask (the first message, a follow-up, or "where are you" after a
lost worker), turns each normalized `AgentUpdate` into timeline events, and stops when the task is terminal,
interrupted, canceled or no longer ours.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.conf import settings

from apps.agents.actions import record_agent_contact
from apps.agents.client import (
    AgentClient,
    AgentError,
    AgentTarget,
    AgentTransportError,
    AgentUpdate,
    cancel_sync,
    iterate_sync,
)
from apps.tasks import actions
from apps.tasks.models import INTERRUPTED_STATES, TERMINAL_STATES, EventKind, Task, TaskState

logger = logging.getLogger(__name__)

__all__ = ["AgentError", "AgentTransportError", "Run", "cancel_remote", "observe"]


def _parts(text: str, data: list[Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"kind": "text", "text": text}] if text else []
    parts += [{"kind": "data", "data": item} for item in data]
    return parts


def _normalized_part(part: dict[str, Any]) -> dict[str, Any]:
    # The SDK's JSON parts are {"text": …} / {"data": …} / {"url": …}; the timeline spells the kind out.
    for kind in ("text", "data", "url", "raw"):
        if kind in part:
            return {"kind": kind, **part}
    return part


def observe(update: AgentUpdate) -> actions.Observation:
    """Translate the client's normalized update into what the timeline records."""
    ids = {"remote_task_id": update.remote_task_id, "remote_context_id": update.context_id}
    if update.kind == "artifact":
        artifact = dict(update.artifact or {})
        data = {
            "artifact_id": artifact.get("artifactId", ""),
            "name": artifact.get("name", ""),
            "parts": [_normalized_part(p) for p in artifact.get("parts", [])],
            "append": bool(artifact.get("append", False)),
            "last_chunk": bool(artifact.get("lastChunk", False)),
        }
        return actions.Observation(kind=EventKind.ARTIFACT, data=data, **ids)
    message = {"role": "agent", "parts": _parts(update.text, update.data)} if (update.text or update.data) else None
    # A plain message instead of a task (kind "message", state "completed") is the agent's result: it falls through
    # to the state event below, recorded like a task that completes with a status message (under `message`).
    state = update.state if update.state in TaskState.values else None
    if state == TaskState.WORKING and message:
        # "Still working, here is where I am": a progress line (and the working state, if not there yet).
        return actions.Observation(kind=EventKind.PROGRESS, data=message, state=state, **ids)
    return actions.Observation(kind=EventKind.STATE, data={"message": message} if message else {}, state=state, **ids)


def _message_kwargs(message: dict[str, Any]) -> dict[str, Any]:
    # Every part goes to the agent as it was sent: in order, text and data separate, with its metadata.
    kwargs: dict[str, Any] = {"parts": [p for p in message.get("parts", []) if p.get("kind") in ("text", "data")]}
    if message.get("metadata"):
        kwargs["metadata"] = message["metadata"]
    return kwargs


class Run:
    def __init__(self, task: Task, worker: str) -> None:
        self.task = task
        self.worker = worker
        self.target = AgentTarget.from_agent(task.agent)
        self.stop_event = threading.Event()
        self.cancel_event = threading.Event()
        self._cancel_sent = False
        self._lock = threading.Lock()

    def request_cancel(self) -> None:
        """Called from the heartbeat thread when the caller asked to cancel: CancelTask, once."""
        self.cancel_event.set()
        with self._lock:
            remote = self.task.remote_task_id
            if self._cancel_sent or not remote:
                return
            self._cancel_sent = True
        try:
            cancel_sync(self.target, remote)
        except (AgentError, AgentTransportError) as exc:
            logger.info("task %s: CancelTask failed: %s", self.task.pk, exc)

    def execute(self) -> str | None:
        """Talk to the agent until the task settles. Returns why it stopped early, if it did."""
        try:
            for update in self._updates():
                try:
                    self.task = actions.record(self.task, [observe(update)], worker=self.worker)
                except Task.DoesNotExist:
                    # Deleted under us (its organization was deleted): remember the agent's id for the task, so
                    # the worker can still ask the agent to stop it.
                    self.task.remote_task_id = self.task.remote_task_id or update.remote_task_id or ""
                    raise
                record_agent_contact(self.task.agent)
                if self.cancel_event.is_set() and not self._cancel_sent:
                    self.request_cancel()  # the remote task id arrived after the cancel request
                if self.task.state in TERMINAL_STATES or self.task.state in INTERRUPTED_STATES:
                    return None
                if self.stop_event.is_set():
                    return "the worker lost its claim"
        except AgentTransportError as exc:
            record_agent_contact(self.task.agent, error=str(exc))
            raise
        return None

    def _updates(self) -> Iterator[AgentUpdate]:
        task = self.task
        if task.pending_message:
            message = _message_kwargs(task.pending_message)
            message.update(task_id=task.remote_task_id or None, context_id=task.remote_context_id or None)
            return iterate_sync(lambda: _client(self.target).run_once(**message))
        if task.remote_task_id:
            # A previous worker died mid-task: pick the task up where the agent has it instead of sending it
            # again (SubscribeToTask for a streaming agent, GetTask polling otherwise).
            return iterate_sync(lambda: _watch(self.target, task.remote_task_id))
        message = _message_kwargs(task.input)
        message.update(message_id=str(task.pk))
        return iterate_sync(lambda: _client(self.target).run_once(**message))


def _client(target: AgentTarget) -> AgentClient:
    # Every way of following a task polls a non-streaming agent at the configured pace.
    return AgentClient(target, poll_interval=settings.HERMES_TASK_POLL_SECONDS)


async def _watch(target: AgentTarget, remote_task_id: str) -> AsyncIterator[AgentUpdate]:
    async with _client(target) as client:
        async for update in client.resume(remote_task_id):
            yield update


def cancel_remote(task: Task, remote_task_id: str) -> None:
    cancel_sync(AgentTarget.from_agent(task.agent), remote_task_id)
