"""The A2A client layer: how Hermes talks to an agent. Built on the official a2a-sdk client; no hand-written JSON-RPC.

Interface for the task worker
-----------------------------
    from apps.agents.client import (
        AgentTarget, AgentClient, AgentUpdate, AgentError, AgentTransportError, iterate_sync,
    )

    target = AgentTarget.from_agent(agent)          # plain data: safe to hand to another thread / event loop

    # async
    async with AgentClient(target) as client:
        async for update in client.run(text="hi", data=[{"k": 1}], message_id=str(task.pk)):
            ...                                       # AgentUpdate, see below
        await client.cancel(remote_task_id)           # CancelTask -> AgentUpdate (status, normally "canceled")
        await client.get_task(remote_task_id)         # GetTask    -> [artifact updates..., status update]
        async for update in client.resume(remote_task_id):
            ...                                       # a worker took over: snapshot, then SubscribeToTask/polling

    # sync (a Celery job; the ORM may be used inside the loop body)
    for update in iterate_sync(lambda: AgentClient(target).run_once(text="hi")):
        persist(update)
    cancel_sync(target, remote_task_id)               # and get_task_sync(target, remote_task_id)

Report reachability with `apps.agents.actions.record_agent_contact(agent, error=None | "why")` (online state).

`run(...)` picks the call the card allows: `SendStreamingMessage` over SSE when the card says streaming, otherwise
`SendMessage` (return immediately) followed by `GetTask` polling until the task is terminal or interrupted.
`request_metadata` (a JSON object) goes as the request's `metadata`, which the a2a-sdk's server hands the agent as
`RequestContext.metadata` (`metadata` is the message's own). Pass `task_id` and `context_id` (from an earlier
update) to continue a task that is `input-required`: the artifacts the task holds before the follow-up (one GetTask)
count as reported, so a turn reports only what it adds. The lower-level
`stream(...)`, `send(...)` and `poll(remote_task_id)` are there too. Agents whose card says protocol 0.3 are
spoken to with v0.3 method names (`message/stream`, `tasks/get`, …) by the SDK's compatibility transport.

`AgentUpdate(kind, state, artifact, remote_task_id, context_id, final, raw, parts, metadata, earlier)`, with `text`
and `data` read from `parts`:
- kind "status": a task state change or progress note (`state` is set; `parts`, `text` and `data` come from the
  status message, if any); "artifact": an artifact (`artifact` = {"artifactId", "name", "parts", "append",
  "lastChunk", ...}; `parts`/`text`/`data` are its parts); "message": the agent answered with a plain message
  instead of a task (`state` is "completed"). Polled snapshots report an artifact the way a stream does: whole
  when it is new or replaced (`append` false), and the parts appended since the last poll as one chunk with
  `append` true (a snapshot does not say which chunk was the last, so `lastChunk` is false there).
- state: A2A task state spelled "submitted", "working", "input-required", "auth-required", "completed",
  "failed", "canceled", "rejected" (or "unknown").
- final: nothing more will come for this call (terminal or interrupted state, or a plain message).
- raw: the SDK event as JSON (camelCase), for the timeline.
- parts: every part as the agent sent it, in order, as JSON (camelCase, as in `artifact`): `{"text"}`, `{"data"}`,
  `{"url"}` or `{"raw"}` (the bytes in base64), with its `filename`, `mediaType` and `metadata` when set. `text`
  (the text parts and URLs, one per line) and `data` (the data parts) are a reading of them that drops files.
- metadata: the status message's (or plain message's) own `metadata`, as JSON ({} when it has none).
- earlier: a status update without a state (`state` None) for an agent message found in a polled snapshot's
  `history` that was never reported: a status message replaced between two polls (the a2a-sdk's task store moves
  it there). Snapshots of a task this call did not start (`get_task`, `resume`, `poll` on its own, `cancel`) take
  the history they first see as reported; a follow-up's (`run` with `task_id`) takes the history before it.

The card's interface `tenant` (`AgentTarget.tenant`, read from the stored card) goes with every request, as the
SDK's own client sends it. Hermes sends no credentials: a 401/403 from an agent whose card requires some names
them (`AgentTarget.required_credentials`) in the AgentError's message.

One call follows one task, the first its answer names: events about another task id are dropped (logged at
WARNING), and so is a plain message after the task in the same stream (not valid A2A). A status is reported when it
differs from the last one in state or message (content, not only the message id).

Errors: `AgentTransportError` — connection refused/reset, timeouts, HTTP 5xx/429/408, a stream cut off before a
final update: retry with backoff (`status_code`; `retry_after`, the seconds of the agent's Retry-After header).
`AgentError` — the agent's own failure or an invalid response (JSON-RPC error, its `data` quoted; HTTP 3xx, as
agent calls do not follow redirects, or 4xx; unparseable reply), or the SSRF guard refusing the address
(`code="ssrf_blocked"`): record, do not retry. A task that the agent itself reports as "failed" is NOT an
exception: it is an update with state "failed". All traffic goes through `apps.core.http.guarded_async_client`
(SSRF guard; CALL_TIMEOUT for calls answered at once, STREAM_TIMEOUT for SSE streams).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import logging
import math
import queue
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin

import httpx
from a2a.client import A2AClientError, A2AClientTimeoutError, ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.client.transports.base import ClientTransport
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.compat.v0_3.jsonrpc_transport import CompatJsonRpcTransport
from a2a.compat.v0_3.versions import is_legacy_version
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError, TaskNotFoundError
from google.protobuf import json_format, struct_pb2

from apps.core.http import DEFAULT_TIMEOUT, OutboundBlocked, guarded_async_client

logger = logging.getLogger(__name__)

T = TypeVar("T")

STATE_NAMES: dict[int, str] = {
    TaskState.TASK_STATE_UNSPECIFIED: "unknown",
    TaskState.TASK_STATE_SUBMITTED: "submitted",
    TaskState.TASK_STATE_WORKING: "working",
    TaskState.TASK_STATE_INPUT_REQUIRED: "input-required",
    TaskState.TASK_STATE_AUTH_REQUIRED: "auth-required",
    TaskState.TASK_STATE_COMPLETED: "completed",
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_CANCELED: "canceled",
    TaskState.TASK_STATE_REJECTED: "rejected",
}
TERMINAL_STATES = frozenset({"completed", "failed", "canceled", "rejected"})
INTERRUPTED_STATES = frozenset({"input-required", "auth-required"})
FINAL_STATES = TERMINAL_STATES | INTERRUPTED_STATES
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# SendMessage, GetTask and CancelTask wait for one reply: the read timeout of every outbound call (30 s).
CALL_TIMEOUT = DEFAULT_TIMEOUT
# Streams may be quiet while an agent thinks; the SDK's server sends SSE pings well inside this.
STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=5.0)
# How much of a JSON-RPC error's `data` its message quotes (the data is kept whole in AgentError.details).
ERROR_DATA_CHARS = 500


class AgentError(Exception):
    """The agent failed or answered something unusable. Record it on the task; retrying will not help."""

    def __init__(self, message: str, *, code: str = "agent_error", details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


class AgentTransportError(Exception):
    """The agent could not be reached, the connection failed, or it answered a status worth retrying (5xx, 429,
    408): retry with backoff. `status_code` is that status; `retry_after` the seconds its Retry-After header asked
    the caller to wait (None when it did not say)."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


def as_sentence(text: str) -> str:
    """`text` ending with a full stop, without doubling one it has (httpx's own messages end with one)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class AgentTarget:
    """What the client needs to call an agent: copied off the model so no ORM object crosses threads."""

    url: str
    streaming: bool = False
    protocol_version: str = "1.0"
    name: str = "agent"
    # The card interface's tenant: a multi-tenant agent serves several tenants at one URL and tells them apart by
    # each request's `tenant`.
    tenant: str = ""
    # The security schemes the card requires ("X-API-Key (apiKey in header)"): Hermes sends no agent credentials,
    # so a 401/403 names them rather than leave the caller guessing.
    required_credentials: tuple[str, ...] = ()

    @classmethod
    def from_agent(cls, agent: Any) -> AgentTarget:
        from apps.agents.cards import calling_terms  # cards imports this module

        terms = calling_terms(agent.card)
        return cls(
            url=agent.url,
            streaming=bool(agent.capabilities.get("streaming")),
            protocol_version=agent.protocol_version or "1.0",
            name=agent.name,
            tenant=terms.tenant,
            required_credentials=terms.required_credentials,
        )

    def sdk_card(self) -> AgentCard:
        """The card the SDK's client factory needs: the stored endpoint (already checked at registration), with
        its tenant, which the factory then sends with every request (its TenantTransportDecorator), as the SDK's
        own client does for the same card."""
        return AgentCard(
            name=self.name,
            supported_interfaces=[
                AgentInterface(
                    url=self.url,
                    protocol_binding=TransportProtocol.JSONRPC,
                    protocol_version=self.protocol_version,
                    tenant=self.tenant,
                )
            ],
            capabilities=AgentCapabilities(streaming=self.streaming),
        )


@dataclass(frozen=True)
class AgentUpdate:
    kind: Literal["status", "message", "artifact"]
    state: str | None
    artifact: dict[str, Any] | None = None
    remote_task_id: str = ""
    context_id: str = ""
    final: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    parts: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    earlier: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def text(self) -> str:
        """The text parts and URLs, one per line (a reading of `parts` that drops files and data)."""
        lines = [str(part.get("text", part.get("url"))) for part in self.parts if "text" in part or "url" in part]
        return "\n".join(lines)

    @property
    def data(self) -> list[Any]:
        """The data parts' values."""
        return [part["data"] for part in self.parts if "data" in part]


def _data_part(item: Any) -> Part:
    value = struct_pb2.Value()
    json_format.ParseDict(item, value)
    return Part(data=value)


def _stored_part(part: dict[str, Any]) -> Part:
    """A part as Hermes stores it (`{"kind": "text"|"data", "text"|"data": …, "metadata"?: {…}}`) in A2A form."""
    built = Part(text=part["text"]) if part.get("kind") == "text" else _data_part(part["data"])
    if part.get("metadata"):
        built.metadata.update(part["metadata"])
    return built


def build_message(
    *,
    text: str = "",
    data: list[Any] | None = None,
    parts: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    message_id: str | None = None,
    task_id: str | None = None,
    context_id: str | None = None,
) -> Message:
    """A user message from `parts` (stored shape: every part as sent, in order, with its metadata) or from the
    `text` / `data` shorthand."""
    if parts is not None:
        built = [_stored_part(part) for part in parts]
    else:
        built = ([Part(text=text)] if text else []) + [_data_part(item) for item in data or []]
    if not built:
        raise AgentError("A message needs at least one text or data part.", code="empty_message")
    message = Message(role=Role.ROLE_USER, message_id=message_id or uuid.uuid4().hex, parts=built)
    if task_id:
        message.task_id = task_id
    if context_id:
        message.context_id = context_id
    if metadata:
        message.metadata.update(metadata)
    return message


def build_request(message: Message, request_metadata: dict[str, Any] | None = None) -> SendMessageRequest:
    """The SendMessage / SendStreamingMessage request for `message`. `request_metadata` is the request's own
    `metadata` (a Struct beside the message; the a2a-sdk's server hands it to the executor as
    `RequestContext.metadata`): Hermes sends a task's metadata there."""
    request = SendMessageRequest(message=message)
    if request_metadata:
        request.metadata.update(request_metadata)
    return request


def _as_json(message: Any) -> Any:
    """A protobuf message (a data part's Struct, an artifact) as plain JSON values. Protobuf keeps every number of
    a Struct as a double, so the agent's `{"result": 14}` would come back as 14.0: whole numbers are ints again (JSON
    itself does not tell 14 from 14.0)."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            return int(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(json_format.MessageToDict(message))


def _parts_json(parts: Any) -> list[dict[str, Any]]:
    # The same JSON an artifact's parts get (`_as_json` of the artifact), so a message's files and URLs are kept
    # the way an artifact's are: raw bytes in base64, with filename, mediaType and metadata.
    return [_as_json(part) for part in parts]


def _metadata_json(message: Message) -> dict[str, Any]:
    """A message's own `metadata` as plain JSON ({} when it has none)."""
    if not message.HasField("metadata"):
        return {}
    metadata: dict[str, Any] = _as_json(message.metadata)
    return metadata


def _message_key(message: Message) -> tuple[str, tuple[bytes, ...]]:
    """A message as told apart from another: its id and parts (not its task and context ids, which a task store
    may fill in)."""
    return message.message_id, tuple(part.SerializeToString(deterministic=True) for part in message.parts)


def _state(value: int) -> str:
    return STATE_NAMES.get(value, "unknown")


def _artifact_key(artifact: Artifact) -> str:
    # An artifact without an id can only be told apart by its content.
    return artifact.artifact_id or json.dumps(json_format.MessageToDict(artifact), sort_keys=True)


def _grown_by(known: Artifact, artifact: Artifact) -> Artifact | None:
    """The parts `artifact` holds after those of `known`, as an artifact of its own, when it is `known` with parts
    appended; None when it is anything else (unchanged, replaced, renamed, parts edited)."""
    seen = len(known.parts)
    if (
        len(artifact.parts) <= seen
        or list(artifact.parts[:seen]) != list(known.parts)
        or (artifact.name, artifact.description, list(artifact.extensions))
        != (known.name, known.description, list(known.extensions))
    ):
        return None
    chunk = Artifact()
    chunk.CopyFrom(artifact)
    del chunk.parts[:seen]
    return chunk


class _Normalizer:
    """Turns SDK events and polled Task snapshots into AgentUpdates, without repeating what was already said.

    One normalizer follows one task: the first task id an event names. Events about another task (an agent that
    mixes up its streams, or a proxy that does) are dropped and logged rather than applied to this one, and so is
    a plain message after the task (an A2A stream is one task's events, or a single message)."""

    def __init__(self, *, history_said: bool = False) -> None:
        # The last status reported: its state, message id and message parts, so that distinct progress notes are
        # all reported whatever their message ids say (the same id, or none), and only an identical repeat is not.
        # Not the whole message: a task store may fill in its task and context ids, and a stream's note read again
        # in a snapshot is the same note.
        self._last_status: tuple[str, str, tuple[bytes, ...]] | None = None
        self._task_id = ""
        # Each artifact as far as it was reported, as the agent's task holds it: a snapshot then yields only what
        # changed since (an agent may append chunks to an artifact between two polls).
        self._artifacts: dict[str, Artifact] = {}
        # How many entries of the task's history were looked at (None: the first snapshot's history counts as said
        # — `history_said`, for a task picked up mid-way), and the status messages reported and not yet met in the
        # history, counted by _message_key: the a2a-sdk's task store moves a status message there when the next
        # status replaces it, so a polled agent's notes made between two polls are found there.
        self._history_seen: int | None = None if history_said else 0
        self._reported: Counter[tuple[str, tuple[bytes, ...]]] = Counter()

    @property
    def final(self) -> bool:
        return self._last_status is not None and self._last_status[0] in FINAL_STATES

    def _follows(self, task_id: str, what: str) -> bool:
        """Whether an event about `task_id` is about the followed task; the first id seen is the followed one. An
        event without a task id is taken as this task's (there is no other it could be about)."""
        if not self._task_id:
            self._task_id = task_id
        if not task_id or task_id == self._task_id:
            return True
        logger.warning("Dropped the agent's %s for task %s: this call follows task %s.", what, task_id, self._task_id)
        return False

    def _status(self, task_id: str, context_id: str, status: Any, raw: dict[str, Any]) -> list[AgentUpdate]:
        state = _state(status.state)
        message = status.message if status.HasField("message") else Message()
        key = (state, *_message_key(message))
        if key == self._last_status:
            return []
        self._last_status = key
        if message.parts:
            self._reported[_message_key(message)] += 1
        return [
            AgentUpdate(
                kind="status",
                state=state,
                remote_task_id=task_id,
                context_id=context_id,
                final=state in FINAL_STATES,
                raw=raw,
                parts=_parts_json(message.parts),
                metadata=_metadata_json(message),
            )
        ]

    def _artifact(self, task_id: str, context_id: str, artifact: Any, extra: dict[str, Any]) -> AgentUpdate:
        as_dict = {**_as_json(artifact), **extra}
        return AgentUpdate(
            kind="artifact",
            state=None,
            artifact=as_dict,
            remote_task_id=task_id,
            context_id=context_id,
            raw={"artifactUpdate": {"taskId": task_id, "contextId": context_id, "artifact": as_dict, **extra}},
            parts=as_dict.get("parts", []),
        )

    def _snapshot_artifact(self, task_id: str, context_id: str, artifact: Artifact) -> AgentUpdate | None:
        """What a snapshot's artifact adds to what was reported of it, in the shape a stream reports it: the
        parts appended since as one chunk with append=True, or (new, or replaced) the whole artifact with
        append=False; None when nothing changed."""
        key = _artifact_key(artifact)
        known = self._artifacts.get(key)
        if known == artifact:
            return None
        remembered = Artifact()
        remembered.CopyFrom(artifact)
        self._artifacts[key] = remembered
        chunk = _grown_by(known, artifact) if known is not None else None
        if chunk is not None:
            return self._artifact(task_id, context_id, chunk, {"append": True, "lastChunk": False})
        return self._artifact(task_id, context_id, artifact, {})

    def _streamed_artifact(self, chunk: Artifact, *, append: bool) -> None:
        """Follow an artifact the way the agent's task store does (the SDK's `append_artifact_to_task`): a chunk
        with append extends the known parts and metadata, anything else replaces the artifact."""
        key = _artifact_key(chunk)
        known = self._artifacts.get(key)
        if append and known is not None:
            known.parts.extend(chunk.parts)
            known.metadata.update(dict(chunk.metadata.items()))
            return
        remembered = Artifact()
        remembered.CopyFrom(chunk)
        self._artifacts[key] = remembered

    def remember(self, task: Task) -> None:
        """Take `task`'s artifacts as reported, as they are now: later snapshots and chunks are told against them.
        Not its status: the task waits for input, which would read as final before the follow-up was even sent.
        Its history and its status message (the question, which the follow-up moves into the history) were
        reported too."""
        for artifact in task.artifacts:
            remembered = Artifact()
            remembered.CopyFrom(artifact)
            self._artifacts[_artifact_key(artifact)] = remembered
        self._history_seen = len(task.history)
        if task.status.HasField("message") and task.status.message.parts:
            self._reported[_message_key(task.status.message)] += 1

    def _history(self, task: Task) -> list[AgentUpdate]:
        """The agent's messages that entered the task's history since the last snapshot and were never reported:
        status messages replaced between two polls. Reported as status updates without a state (`earlier`): the
        history does not say in which state each was said. The user's messages are the caller's own."""
        seen = len(task.history) if self._history_seen is None else self._history_seen
        self._history_seen = len(task.history)
        updates = []
        for message in task.history[seen:]:
            if message.role != Role.ROLE_AGENT or not message.parts:
                continue
            key = _message_key(message)
            if self._reported[key] > 0:
                self._reported[key] -= 1  # the status message reported earlier, moved there
                continue
            updates.append(
                AgentUpdate(
                    kind="status",
                    state=None,
                    remote_task_id=task.id,
                    context_id=task.context_id,
                    raw={"historyMessage": json_format.MessageToDict(message)},
                    parts=_parts_json(message.parts),
                    metadata=_metadata_json(message),
                    earlier=True,
                )
            )
        return updates

    def task(self, task: Task) -> list[AgentUpdate]:
        if not self._follows(task.id, "task"):
            return []
        updates = [
            update
            for artifact in task.artifacts
            if (update := self._snapshot_artifact(task.id, task.context_id, artifact)) is not None
        ]
        raw = {"task": json_format.MessageToDict(task)}
        # What the agent said before, then its artifacts; the state goes last so a terminal update never precedes
        # the artifacts it completes.
        return self._history(task) + updates + self._status(task.id, task.context_id, task.status, raw)

    def event(self, event: StreamResponse) -> list[AgentUpdate]:
        kind = event.WhichOneof("payload")
        if kind == "task":
            return self.task(event.task)
        if kind == "status_update":
            update = event.status_update
            if not self._follows(update.task_id, "status update"):
                return []
            return self._status(update.task_id, update.context_id, update.status, json_format.MessageToDict(event))
        if kind == "artifact_update":
            update = event.artifact_update
            if not self._follows(update.task_id, "artifact update"):
                return []
            self._streamed_artifact(update.artifact, append=update.append)
            extra = {"append": update.append, "lastChunk": update.last_chunk}
            return [self._artifact(update.task_id, update.context_id, update.artifact, extra)]
        if kind == "message":
            message = event.message
            if self._task_id:
                # Not the task's result: a stream that opened with a task goes on with that task's events. (The
                # SDK's client ends the stream at a message: `_events` then asks the task how it ended.)
                logger.warning(
                    "Dropped the agent's message %s: it came after task %s in the same stream.",
                    message.message_id,
                    self._task_id,
                )
                return []
            return [
                AgentUpdate(
                    kind="message",
                    state="completed",
                    remote_task_id=message.task_id,
                    context_id=message.context_id,
                    final=True,
                    raw=json_format.MessageToDict(event),
                    parts=_parts_json(message.parts),
                    metadata=_metadata_json(message),
                )
            ]
        raise AgentError("The agent sent an empty stream event.", code="invalid_response")


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a response's Retry-After header asks the caller to wait (a number of seconds or an HTTP date);
    None when it has none, or none that can be read."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - datetime.now(UTC).timestamp()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _http_status_error(response: httpx.Response) -> Exception:
    status = response.status_code
    answered = f"The agent answered HTTP {status} ({httpx.codes.get_reason_phrase(status) or 'unknown status'})"
    if status in RETRYABLE_STATUS or status >= 500:
        wait = retry_after(response)
        message = answered + (f"; it asks to be called again in {wait:g} s." if wait is not None else ".")
        return AgentTransportError(message, status_code=status, retry_after=wait)
    if 300 <= status < 400:
        # Hermes calls the URL it was given and no other (each hop would need its own SSRF and registration
        # check); a URL that redirects — say one missing its trailing slash — must be registered as it ends.
        location = response.headers.get("Location", "")
        where = urljoin(str(response.request.url), location) if location else "another URL (no Location given)"
        return AgentError(
            f"The agent redirected to {where} (HTTP {status}); Hermes does not follow redirects for agent calls: "
            "register the agent with its final URL.",
            code="http_error",
            details={"status": status, "location": where},
        )
    return AgentError(answered + ".", code="http_error", details={"status": status})


def _rpc_error_message(exc: A2AError) -> str:
    if isinstance(exc, TaskNotFoundError):
        # Said in what it means for the task: the SDK's standard ErrorInfo `data` (reason TASK_NOT_FOUND) only
        # repeated the message as a protobuf dump. Agents that keep tasks in memory (the SDK's default store)
        # lose them when they restart, and a task's later GetTask/follow-up meets this.
        return (
            f"The agent no longer knows this task ({exc.message}): it may have restarted and lost its tasks, "
            "or it removed this one."
        )
    message = f"The agent returned an error: {exc.message}"
    if not exc.data:
        return message
    data = json.dumps(exc.data, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(data) > ERROR_DATA_CHARS:
        data = data[: ERROR_DATA_CHARS - 1] + "…"
    return f"{message} (data: {data})"


def classify(exc: BaseException) -> Exception:
    """Map what the SDK/httpx raise onto AgentTransportError (retry) or AgentError (record)."""
    if isinstance(exc, AgentError | AgentTransportError):
        return exc
    if isinstance(exc, OutboundBlocked):
        return AgentError(str(exc), code="ssrf_blocked", details={"rule": exc.rule, "host": exc.host})
    if isinstance(exc, A2AClientTimeoutError | httpx.TimeoutException | TimeoutError):
        return AgentTransportError(as_sentence(f"Timed out talking to the agent: {exc or type(exc).__name__}"))
    cause = exc.__cause__ if isinstance(exc, A2AClientError) else exc
    if isinstance(cause, httpx.HTTPStatusError):
        return _http_status_error(cause.response)
    if isinstance(cause, httpx.TransportError):
        return AgentTransportError(as_sentence(f"Could not talk to the agent: {cause or type(cause).__name__}"))
    if isinstance(exc, A2AError):
        # JSON-RPC errors from the agent (task not found, invalid params, internal error, …) and invalid replies.
        return AgentError(
            _rpc_error_message(exc), code=type(exc).__name__, details={"data": exc.data} if exc.data else {}
        )
    if isinstance(exc, ValueError | json_format.ParseError | json.JSONDecodeError):
        return AgentError(f"The agent's response is not valid A2A: {exc}", code="invalid_response")
    return exc if isinstance(exc, Exception) else AgentError(str(exc))


def _keep_error_data(error: Exception, rpc_error: dict[str, Any]) -> Exception:
    """The SDK's JSON-RPC transports keep an error's `data` only in A2A 1.0's own shape (a google.rpc.ErrorInfo in
    a list); any other `data` — often what says why, `{"hint": "call later"}` — was dropped. Keep it as sent."""
    if isinstance(error, A2AError) and not error.data and rpc_error.get("data") is not None:
        error.data = rpc_error["data"]
    return error


class _JsonRpcTransport(JsonRpcTransport):
    def _create_jsonrpc_error(self, error_dict: dict[str, Any]) -> Exception:
        return _keep_error_data(super()._create_jsonrpc_error(error_dict), error_dict)


class _CompatJsonRpcTransport(CompatJsonRpcTransport):
    def _create_jsonrpc_error(self, error_dict: dict[str, Any]) -> Exception:
        return _keep_error_data(super()._create_jsonrpc_error(error_dict), error_dict)


class AgentClient:
    """One agent; use as an async context manager (or call `aclose()`).

    Two guarded HTTP clients, made when first needed: one for SSE streams (STREAM_TIMEOUT: a stream may be quiet
    while the agent thinks) and one for the calls that wait for a single reply (CALL_TIMEOUT). `timeout`, when
    given, is used for both."""

    def __init__(self, target: AgentTarget, *, poll_interval: float = 0.5, timeout: httpx.Timeout | None = None):
        self.target = target
        self.poll_interval = poll_interval
        self._timeout = timeout
        self._http: dict[bool, httpx.AsyncClient] = {}
        self._clients: dict[bool, Client] = {}

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for http in self._http.values():
            await http.aclose()

    def _classify(self, exc: BaseException) -> Exception:
        """`classify`, and a refusal for want of credentials said for what it is when the card requires some."""
        error = classify(exc)
        if (
            isinstance(error, AgentError)
            and error.details.get("status") in (401, 403)
            and self.target.required_credentials
        ):
            required = ", ".join(self.target.required_credentials)
            message = (
                f"{str(error).rstrip('.')}: the agent's card requires {required}; "
                "Hermes does not send agent credentials."
            )
            return AgentError(
                message, code=error.code, details={**error.details, "required": list(self.target.required_credentials)}
            )
        return error

    def _sdk(self, *, streaming: bool) -> Client:
        if streaming not in self._clients:
            timeout = self._timeout or (STREAM_TIMEOUT if streaming else CALL_TIMEOUT)
            http = self._http[streaming] = guarded_async_client(timeout=timeout)
            factory = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming))
            # The SDK's own JSON-RPC transports (v1.0, or v0.3 for a card that says so), keeping error data.
            legacy = is_legacy_version(self.target.protocol_version)

            def produce(card: AgentCard, url: str, config: ClientConfig) -> ClientTransport:
                if legacy:
                    return _CompatJsonRpcTransport(http, card, url, is_shared_httpx=True)
                return _JsonRpcTransport(http, card, url, is_shared_httpx=True)

            factory.register(TransportProtocol.JSONRPC, produce)
            self._clients[streaming] = factory.create(self.target.sdk_card())
        return self._clients[streaming]

    async def _events(
        self, request: SendMessageRequest, *, streaming: bool, normalizer: _Normalizer | None = None
    ) -> AsyncIterator[AgentUpdate]:
        normalizer = normalizer or _Normalizer()
        final = False
        remote_task_id = ""
        try:
            async for event in self._sdk(streaming=streaming).send_message(request):
                for update in normalizer.event(event):
                    final = final or update.final
                    remote_task_id = update.remote_task_id or remote_task_id
                    yield update
        except Exception as exc:
            raise self._classify(exc) from exc
        if final or not (streaming and self.target.streaming):
            return
        # A stream can close before its last event reaches us (the SDK documents this for a task canceled while
        # streaming): the task itself knows how it ended.
        if remote_task_id:
            for update in await self._reread(remote_task_id, normalizer):
                final = final or update.final
                yield update
        if not final:
            raise AgentTransportError("The agent's stream ended before the task reached a final state.")

    async def _fetch(self, remote_task_id: str) -> Task:
        try:
            return await self._sdk(streaming=False).get_task(GetTaskRequest(id=remote_task_id))
        except Exception as exc:
            raise self._classify(exc) from exc

    async def _reread(self, remote_task_id: str, normalizer: _Normalizer) -> list[AgentUpdate]:
        return normalizer.task(await self._fetch(remote_task_id))

    async def stream(
        self,
        *,
        normalizer: _Normalizer | None = None,
        request_metadata: dict[str, Any] | None = None,
        **message: Any,
    ) -> AsyncIterator[AgentUpdate]:
        """SendStreamingMessage: every update as the agent sends it, until a final one."""
        request = build_request(build_message(**message), request_metadata)
        async for update in self._events(request, streaming=True, normalizer=normalizer):
            yield update

    async def send(
        self,
        *,
        return_immediately: bool = False,
        normalizer: _Normalizer | None = None,
        request_metadata: dict[str, Any] | None = None,
        **message: Any,
    ) -> list[AgentUpdate]:
        """SendMessage: the agent's answer (a task snapshot or a message) as updates.

        With return_immediately the agent answers as soon as the task exists; poll it with `poll()`.
        """
        request = build_request(build_message(**message), request_metadata)
        request.configuration.return_immediately = return_immediately
        return [update async for update in self._events(request, streaming=False, normalizer=normalizer)]

    async def get_task(self, remote_task_id: str) -> list[AgentUpdate]:
        """GetTask: the task's artifacts and its current status (the status update is last)."""
        return await self._reread(remote_task_id, _Normalizer(history_said=True))

    async def poll(
        self, remote_task_id: str, *, deadline: float | None = None, normalizer: _Normalizer | None = None
    ) -> AsyncIterator[AgentUpdate]:
        """GetTask until the task is terminal or interrupted; yields only what changed since the last poll."""
        normalizer = normalizer or _Normalizer(history_said=True)
        loop = asyncio.get_running_loop()
        while True:
            updates = await self._reread(remote_task_id, normalizer)
            for update in updates:
                yield update
            if normalizer.final:
                return
            if deadline is not None and loop.time() >= deadline:
                raise AgentTransportError(f"Task {remote_task_id} did not finish before the deadline.")
            await asyncio.sleep(self.poll_interval)

    async def resume(self, remote_task_id: str, *, deadline: float | None = None) -> AsyncIterator[AgentUpdate]:
        """Pick up a task this process did not start or lost track of (a worker died mid-stream): the current
        snapshot first, then SubscribeToTask over SSE when the card streams, else GetTask polling."""
        normalizer = _Normalizer(history_said=True)
        for update in await self._reread(remote_task_id, normalizer):
            yield update
        if normalizer.final:
            return
        if not self.target.streaming:
            async for update in self.poll(remote_task_id, deadline=deadline, normalizer=normalizer):
                yield update
            return
        try:
            async for event in self._sdk(streaming=True).subscribe(SubscribeToTaskRequest(id=remote_task_id)):
                for update in normalizer.event(event):
                    yield update
                if normalizer.final:
                    return
        except Exception as exc:
            error = self._classify(exc)
            if not isinstance(error, AgentError) or error.code == "ssrf_blocked":
                raise error from exc
            # The agent will not resubscribe us (not supported, or it no longer streams that task): the task
            # itself still answers GetTask, so watch it that way rather than fail it.
            async for update in self.poll(remote_task_id, deadline=deadline, normalizer=normalizer):
                yield update
            return
        for update in await self._reread(remote_task_id, normalizer):  # the stream closed early: ask the task
            yield update
        if not normalizer.final:
            raise AgentTransportError("The agent's stream ended before the task reached a final state.")

    async def cancel(self, remote_task_id: str) -> AgentUpdate:
        """CancelTask: the agent's answer as a status update (normally state "canceled")."""
        try:
            task = await self._sdk(streaming=False).cancel_task(CancelTaskRequest(id=remote_task_id))
        except Exception as exc:
            raise self._classify(exc) from exc
        return _Normalizer(history_said=True).task(task)[-1]

    async def run(self, *, deadline: float | None = None, **message: Any) -> AsyncIterator[AgentUpdate]:
        """Send a message the way the card allows and yield every update until a final one.

        `message` is `text` and `data` (list of JSON values) or `parts` (the stored shape), `metadata` (the
        message's), `message_id`, and — to continue an input-required task — `task_id` and `context_id`;
        `request_metadata` is the request's (see `build_request`). `deadline` is an event-loop time for polling.
        """
        # One normalizer for the whole call: the polled snapshots repeat what the first answer said.
        normalizer = _Normalizer()
        if message.get("task_id"):
            # A follow-up: the agent's task still holds the artifacts of the earlier turns, which were reported
            # then, and every snapshot of this turn repeats them (a polled agent's first GetTask; a stream that
            # opens with the task, or is re-read after it closed early). Nothing moves on an interrupted task
            # until this message arrives, so what it holds now is what was reported.
            normalizer.remember(await self._fetch(message["task_id"]))
        if self.target.streaming:
            async for update in self.stream(normalizer=normalizer, **message):
                yield update
            return
        first = await self.send(return_immediately=True, normalizer=normalizer, **message)
        for update in first:
            yield update
        last = first[-1] if first else None
        if last is None or last.final or not last.remote_task_id:
            return
        async for update in self.poll(last.remote_task_id, deadline=deadline, normalizer=normalizer):
            yield update

    async def run_once(self, **message: Any) -> AsyncIterator[AgentUpdate]:
        """`run` that closes the client when the iteration ends (for `iterate_sync`)."""
        try:
            async for update in self.run(**message):
                yield update
        finally:
            await self.aclose()


def iterate_sync(make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Consume an async iterator from synchronous code (a Celery job) without an event loop in this thread.

    The iterator runs on a private event loop in a helper thread; items arrive here in order, exceptions are
    re-raised here, and leaving the loop early (break, an exception in the body) cancels the async side, which
    closes the HTTP stream. Because this thread never runs a loop, the Django ORM may be used in the loop body.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    ready = threading.Event()
    handles: dict[str, Any] = {}

    async def pump() -> None:
        handles["loop"] = asyncio.get_running_loop()
        handles["task"] = asyncio.current_task()
        ready.set()
        async for item in make():
            items.put(("item", item))

    def run() -> None:
        try:
            asyncio.run(pump())
            items.put(("done", None))
        except asyncio.CancelledError:
            items.put(("done", None))
        except BaseException as exc:
            items.put(("error", exc))
        finally:
            ready.set()

    # The helper thread runs in a copy of the caller's contextvars: the log context (request_id, task_id, ...) and
    # the active trace span follow the job into the A2A call, so its HTTP requests belong to the job's trace.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="a2a-client", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                finished = True
                raise value
            else:
                finished = True
                return
    finally:
        if not finished:
            ready.wait()
            loop, task = handles.get("loop"), handles.get("task")
            if loop is not None and task is not None and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)


def _call_sync(make: Callable[[], Any]) -> Any:
    (result,) = iterate_sync(make)  # drain fully so the helper thread finishes and closes its client
    return result


def cancel_sync(target: AgentTarget, remote_task_id: str) -> AgentUpdate:
    async def one() -> AsyncIterator[AgentUpdate]:
        async with AgentClient(target) as client:
            yield await client.cancel(remote_task_id)

    result: AgentUpdate = _call_sync(one)
    return result


def get_task_sync(target: AgentTarget, remote_task_id: str) -> list[AgentUpdate]:
    async def one() -> AsyncIterator[list[AgentUpdate]]:
        async with AgentClient(target) as client:
            yield await client.get_task(remote_task_id)

    result: list[AgentUpdate] = _call_sync(one)
    return result
