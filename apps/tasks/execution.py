"""One worker's conversation with an agent about one task, recorded as it happens.

The A2A protocol work (SDK client, v1.0/v0.3 method names, SSE vs SendMessage + GetTask polling) lives in
`apps.agents.client`; this module decides what to ask (the first message, a follow-up, or "where are you" after a
lost worker), turns each normalized `AgentUpdate` into timeline events, and stops when the task is terminal,
interrupted, canceled or no longer ours.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
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
    get_task_sync,
    iterate_sync,
)
from apps.tasks import actions
from apps.tasks.models import INTERRUPTED_STATES, TERMINAL_STATES, EventKind, Task, TaskState

logger = logging.getLogger(__name__)

__all__ = ["AgentError", "AgentTransportError", "Run", "cancel_remote", "observe"]


def _normalized_part(part: dict[str, Any]) -> dict[str, Any]:
    # The SDK's JSON parts are {"text": …} / {"data": …} / {"url": …} / {"raw": base64}; the timeline spells the
    # kind out.
    for kind in ("text", "data", "url", "raw"):
        if kind in part:
            return {"kind": kind, **part}
    return part


def _says_something(part: dict[str, Any]) -> bool:
    # Agents may send a status message of one empty text part with every update: that is no message (no empty
    # progress line), as it was when only the message's text was read.
    return bool(part.get("text")) if part.get("kind") == "text" else "kind" in part


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
        # What the agent said of the artifact besides its parts, when it said it (an event holds no empty keys).
        for key in ("description", "metadata"):
            if artifact.get(key):
                data[key] = artifact[key]
        return actions.Observation(kind=EventKind.ARTIFACT, data=data, **ids)
    # The agent's message keeps its parts as it sent them (files, URLs with their names, text and data apart), the
    # way an artifact's are kept, and its metadata, the way a user message's is.
    parts = [_normalized_part(p) for p in update.parts]
    message: dict[str, Any] | None = None
    if any(_says_something(p) for p in parts):
        message = {"role": "agent", "parts": parts}
        if update.metadata:
            message["metadata"] = update.metadata
    # A plain message instead of a task (kind "message", state "completed") is the agent's result: it falls through
    # to the state event below, recorded like a task that completes with a status message (under `message`).
    state = update.state if update.state in TaskState.values else None
    if update.earlier and message:
        # A polled agent's status message replaced before the next poll, read from its task's history: said while
        # the task ran, in a state the history does not keep. A progress line, as the stream would have brought.
        return actions.Observation(kind=EventKind.PROGRESS, data=message, **ids)
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


def _send_kwargs(task: Task, message: dict[str, Any]) -> dict[str, Any]:
    """What `AgentClient.run` is given to send `message` of `task`: the message, and the task's metadata as the
    request's. On every message of the task, follow-ups too: the agent is handed it per request
    (RequestContext.metadata), and the a2a-sdk keeps none of it for the next turn."""
    return {**_message_kwargs(message), "request_metadata": task.metadata or None}


# How long a cancel waits for the agent's first answer (it names the agent's task, which CancelTask needs).
CANCEL_GRACE_SECONDS = 5.0

# How often the agent call looks whether it must end (a cancel, or the task ended elsewhere): a flag in memory.
HALT_CHECK_SECONDS = 0.05


async def _until_halted(halt: threading.Event, updates: AsyncIterator[AgentUpdate]) -> AsyncIterator[AgentUpdate]:
    """`updates` until `halt` is set. A watcher cancels the task that drives the iteration (iterate_sync's loop), so
    the agent call ends where it waits — mid-stream, or between two polls — and its HTTP client closes; the
    iteration then simply ends, as if the agent had stopped talking."""
    driver = asyncio.current_task()

    async def watch() -> None:
        while not halt.is_set():
            await asyncio.sleep(HALT_CHECK_SECONDS)
        if driver is not None:
            driver.cancel()

    watcher = asyncio.create_task(watch())
    try:
        async for update in updates:
            yield update
    finally:
        watcher.cancel()


class Run:
    """One claimed run. The worker thread talks to the agent (`execute`); the heartbeat thread (apps.tasks.tasks)
    calls `request_cancel` when the caller canceled and `halt.set` when the task is no longer ours."""

    def __init__(self, task: Task, worker: str) -> None:
        self.task = task
        self.worker = worker
        self.target = AgentTarget.from_agent(task.agent)
        # Set: end the call to the agent now (see _until_halted).
        self.halt = threading.Event()
        self.cancel_event = threading.Event()
        self._cancel_sent = False
        self._lock = threading.Lock()

    def request_cancel(self) -> None:
        """The caller asked to cancel. The call to the agent ends at once when the agent's task id is known (the
        worker then records `canceled` and calls CancelTask); before that, at the agent's first answer, which
        carries the id (`record` cancels the task on it) — ended earlier, the agent's task could not be stopped.
        An agent that says nothing for CANCEL_GRACE_SECONDS more is not waited for: the call ends, the task is
        canceled here, and the agent, which never named its task, cannot be told."""
        self.cancel_event.set()
        if self.task.remote_task_id:
            self.halt.set()
            return
        timer = threading.Timer(CANCEL_GRACE_SECONDS, self.halt.set)
        timer.daemon = True
        timer.start()

    def stop_agent(self) -> None:
        """CancelTask at the agent, once, for a task that ended here while the agent still works on it (canceled,
        failed by its deadline, deleted); nothing when the agent's task id is not known."""
        with self._lock:
            remote = self.task.remote_task_id
            if self._cancel_sent or not remote:
                return
            self._cancel_sent = True
        try:
            cancel_sync(self.target, remote)
        except (AgentError, AgentTransportError) as exc:
            logger.info("task %s: CancelTask failed: %s", self.task.pk, exc)
            actions.note_agent_cancel_failed(self.task.organization_id, self.task.pk, str(exc))

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
                if self.task.state in TERMINAL_STATES:
                    if not update.terminal:
                        # Ended here (canceled, failed by its deadline) while the agent still works on it.
                        self.stop_agent()
                    return None
                if self.task.state in INTERRUPTED_STATES:
                    return None
                if self.halt.is_set():
                    break
        except AgentTransportError as exc:
            record_agent_contact(self.task.agent, error=str(exc))
            raise
        return self._halted() if self.halt.is_set() else None

    def _halted(self) -> str | None:
        """The call to the agent was ended from outside: say why, and settle what must be settled here."""
        current = Task.objects.unscoped("the run was halted").filter(pk=self.task.pk).first()
        if current is None:
            raise Task.DoesNotExist(f"task {self.task.pk} was deleted while running")
        if current.cancel_requested_at and not current.is_terminal:
            actions.finish(current, TaskState.CANCELED, reason="canceled by the caller")
            self.stop_agent()
            return None
        if current.is_terminal:
            self.stop_agent()  # its deadline failed it (or it was canceled) while the agent worked
            return None
        return "the worker lost its claim"

    def _updates(self) -> Iterator[AgentUpdate]:
        task = self.task
        if task.pending_message:
            message = _send_kwargs(task, task.pending_message)
            message.update(task_id=task.remote_task_id or None, context_id=task.remote_context_id or None)
            return iterate_sync(lambda: _until_halted(self.halt, _client(self.target).run_once(**message)))
        if task.remote_task_id:
            # A previous worker died mid-task: pick the task up where the agent has it instead of sending it
            # again (SubscribeToTask for a streaming agent, GetTask polling otherwise), without recording again
            # what that worker already recorded.
            recorded = _Recorded.of(task)
            watch = iterate_sync(lambda: _until_halted(self.halt, _watch(self.target, task.remote_task_id)))
            return recorded.without(watch)
        message = _send_kwargs(task, task.input)
        message.update(message_id=str(task.pk))
        return iterate_sync(lambda: _until_halted(self.halt, _client(self.target).run_once(**message)))


def _agent_words(event_kind: str, data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The parts of what the agent said in a timeline event (a progress line, its message, a state's message)."""
    if event_kind == EventKind.PROGRESS or (event_kind == EventKind.MESSAGE and data.get("role") == "agent"):
        return list(data.get("parts", []))
    if event_kind == EventKind.STATE and isinstance(data.get("message"), dict):
        return list(data["message"].get("parts", []))
    return None


@dataclass
class _Recorded:
    """What a task's timeline already holds of the agent's output, for a run that picks the task up after its
    worker died: the agent's first snapshot repeats all of it (every artifact whole, the last status message)."""

    state: str
    artifacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by artifact id, chunks joined
    unnamed: list[list[dict[str, Any]]] = field(default_factory=list)  # the parts of artifacts without an id
    said: list[dict[str, Any]] | None = None  # the parts of the agent's last words

    @classmethod
    def of(cls, task: Task) -> _Recorded:
        recorded = cls(state=task.state)
        for kind, data in task.events.order_by("seq").values_list("kind", "data"):
            if kind == EventKind.ARTIFACT:
                key, parts = data.get("artifact_id", ""), list(data.get("parts", []))
                if not key:
                    recorded.unnamed.append(parts)
                elif data.get("append") and key in recorded.artifacts:
                    recorded.artifacts[key] += parts  # as the agent's task store joins chunks
                else:
                    recorded.artifacts[key] = parts
            elif (words := _agent_words(kind, data)) is not None:
                recorded.said = words
        return recorded

    def without(self, updates: Iterator[AgentUpdate]) -> Iterator[AgentUpdate]:
        """`updates` minus what is recorded: an artifact held whole is dropped, one held in part comes as a chunk
        of the parts after those, one changed since comes as the replacement it is. Only an artifact's first
        mention (and the first status) can repeat the past: later ones are told against it by the client."""
        first_status = True
        for update in updates:
            if update.kind == "status" and first_status:
                first_status = False
                if update.state == self.state and self.said == [_normalized_part(p) for p in update.parts]:
                    continue  # the last progress line again, in the same state
            elif update.kind == "artifact" and not (update.artifact or {}).get("append"):
                update = self._unrecorded(update)  # type: ignore[assignment]
                if update is None:
                    continue
            yield update

    def _unrecorded(self, update: AgentUpdate) -> AgentUpdate | None:
        artifact = dict(update.artifact or {})
        parts = list(artifact.get("parts", []))
        normalized = [_normalized_part(p) for p in parts]
        key = artifact.get("artifactId", "")
        if not key:
            if normalized in self.unnamed:
                self.unnamed.remove(normalized)
                return None
            return update
        held = self.artifacts.pop(key, None)
        if held is None or normalized == held:
            return update if held is None else None
        if not held or normalized[: len(held)] != held:
            return update
        chunk = {**artifact, "parts": parts[len(held) :], "append": True, "lastChunk": False}
        raw = {"artifactUpdate": {**update.raw.get("artifactUpdate", {}), "artifact": chunk, "append": True}}
        return replace(update, artifact=chunk, parts=chunk["parts"], raw=raw)


def _client(target: AgentTarget) -> AgentClient:
    # Every way of following a task polls a non-streaming agent at the configured pace.
    return AgentClient(target, poll_interval=settings.HERMES_TASK_POLL_SECONDS)


async def _watch(target: AgentTarget, remote_task_id: str) -> AsyncIterator[AgentUpdate]:
    async with _client(target) as client:
        async for update in client.resume(remote_task_id):
            yield update


def cancel_remote(task: Task, remote_task_id: str) -> None:
    cancel_sync(AgentTarget.from_agent(task.agent), remote_task_id)


def agent_state(task: Task) -> str | None:
    """The state the agent's own task is in now (one GetTask); None when its answer holds no status."""
    updates = get_task_sync(AgentTarget.from_agent(task.agent), task.remote_task_id)
    return next((update.state for update in reversed(updates) if update.kind == "status"), None)
