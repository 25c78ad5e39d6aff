"""The A2A client layer against a real agent built with the official a2a-sdk, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from apps.agents.client import (
    AgentClient,
    AgentError,
    AgentTarget,
    AgentTransportError,
    AgentUpdate,
    build_message,
    cancel_sync,
    get_task_sync,
    iterate_sync,
)
from tests.servers import QuietHandler


def collect(target: AgentTarget, **message: Any) -> list[AgentUpdate]:
    return list(iterate_sync(lambda: AgentClient(target).run_once(**message)))


def streaming(base: str) -> AgentTarget:
    return AgentTarget(url=f"{base}/stream/", streaming=True)


def plain(base: str) -> AgentTarget:
    return AgentTarget(url=f"{base}/plain/", streaming=False)


def test_streaming_run_yields_every_update_in_order(
    sdk_agent_base: str, sdk_agent_server: Any, allow_loopback: None
) -> None:
    updates = collect(streaming(sdk_agent_base), text="hello", data=[{"n": 1}])
    assert sdk_agent_server.calls == [("/stream/", "SendStreamingMessage")]
    assert [(u.kind, u.state) for u in updates] == [
        ("status", "submitted"),
        ("status", "working"),
        ("status", "working"),
        ("artifact", None),
        ("status", "completed"),
    ]
    progress, artifact, done = updates[2], updates[3], updates[4]
    assert progress.text == "thinking"
    assert artifact.text == "echo: hello"
    assert artifact.data == [{"received": {"n": 1}}]
    assert artifact.artifact is not None and artifact.artifact["name"] == "result"
    assert done.final and done.terminal
    assert len({u.remote_task_id for u in updates}) == 1 and updates[0].context_id
    assert "statusUpdate" in done.raw


def test_non_streaming_run_sends_then_polls(sdk_agent_base: str, sdk_agent_server: Any, allow_loopback: None) -> None:
    updates = collect(plain(sdk_agent_base), text="hello")
    methods = [method for _, method in sdk_agent_server.calls]
    assert methods[0] == "SendMessage" and set(methods[1:]) == {"GetTask"}
    kinds = [(u.kind, u.state) for u in updates]
    assert kinds[0] == ("status", "submitted")
    assert ("artifact", None) in kinds
    assert kinds[-1] == ("status", "completed")
    assert [u.text for u in updates if u.kind == "artifact"] == ["echo: hello"]  # polled snapshots not repeated


def test_send_blocking_returns_the_finished_task(sdk_agent_base: str, allow_loopback: None) -> None:
    async def go() -> list[AgentUpdate]:
        async with AgentClient(plain(sdk_agent_base)) as client:
            updates = await client.send(text="x")
            again = await client.get_task(updates[-1].remote_task_id)
            assert [u.kind for u in again] == ["artifact", "status"]
            return updates

    updates = asyncio.run(go())
    assert updates[-1].state == "completed"
    assert [u.text for u in updates if u.kind == "artifact"] == ["echo: x"]
    # The working note the agent said before it finished is in the finished task's history, and reported from there.
    assert [(u.text, u.state) for u in updates if u.earlier] == [("thinking", None)]


def test_input_required_then_continue(sdk_agent_base: str, allow_loopback: None) -> None:
    target = streaming(sdk_agent_base)
    first = collect(target, text="ask")
    asked = first[-1]
    assert (asked.state, asked.text, asked.final, asked.terminal) == ("input-required", "which city?", True, False)
    second = collect(target, text="Paris", task_id=asked.remote_task_id, context_id=asked.context_id)
    assert second[-1].state == "completed"
    assert [u.text for u in second if u.kind == "artifact"] == ["got: Paris"]
    assert {u.remote_task_id for u in second} == {asked.remote_task_id}


def test_agent_failure_is_an_update_not_an_exception(sdk_agent_base: str, allow_loopback: None) -> None:
    for target in (streaming(sdk_agent_base), plain(sdk_agent_base)):
        updates = collect(target, text="fail")
        assert updates[-1].state == "failed" and updates[-1].text == "cannot do that"


def test_executor_crash_is_an_agent_error(sdk_agent_base: str, allow_loopback: None) -> None:
    # The SDK server reports an exception in the executor as a JSON-RPC internal error: the agent's own failure.
    with pytest.raises(AgentError) as exc_info:
        collect(streaming(sdk_agent_base), text="boom")
    assert exc_info.value.code == "InternalError" and "exploded" in str(exc_info.value)


def test_plain_message_reply(sdk_agent_base: str, allow_loopback: None) -> None:
    for target in (streaming(sdk_agent_base), plain(sdk_agent_base)):
        updates = collect(target, text="message")
        assert [(u.kind, u.state, u.text, u.final) for u in updates] == [
            ("message", "completed", "just a message", True)
        ]


def test_v03_agent_is_spoken_to_with_v03_methods(
    sdk_agent_base: str, sdk_agent_server: Any, allow_loopback: None
) -> None:
    target = AgentTarget(url=f"{sdk_agent_base}/legacy/", streaming=False, protocol_version="0.3.0")
    updates = collect(target, text="old")
    methods = [method for _, method in sdk_agent_server.calls]
    assert methods[0] == "message/send" and set(methods[1:]) <= {"tasks/get"}
    assert updates[-1].state == "completed"
    assert [u.text for u in updates if u.kind == "artifact"] == ["echo: old"]


def test_cancel_and_get_task_sync(sdk_agent_base: str, allow_loopback: None) -> None:
    target = streaming(sdk_agent_base)
    asked = collect(target, text="ask")[-1]
    assert get_task_sync(target, asked.remote_task_id)[-1].state == "input-required"
    canceled = cancel_sync(target, asked.remote_task_id)
    assert canceled.state == "canceled" and canceled.terminal
    with pytest.raises(AgentError) as exc_info:  # canceling again: the agent's own JSON-RPC error
        cancel_sync(target, asked.remote_task_id)
    assert exc_info.value.code == "TaskNotCancelableError"
    with pytest.raises(AgentError) as exc_info:
        get_task_sync(target, "no-such-task")
    assert exc_info.value.code == "TaskNotFoundError"
    # What it means for the task, not "The agent returned an error: … (data: [{"@type": …ErrorInfo…}])".
    assert str(exc_info.value).startswith("The agent no longer knows this task (") and "@type" not in str(
        exc_info.value
    )


def test_refused_connection_is_a_transport_error(allow_loopback: None, free_port: int) -> None:
    for is_streaming in (True, False):
        target = AgentTarget(url=f"http://127.0.0.1:{free_port}/", streaming=is_streaming)
        with pytest.raises(AgentTransportError):
            collect(target, text="hi")


def test_ssrf_blocked_is_an_agent_error(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    with pytest.raises(AgentError) as exc_info:
        collect(AgentTarget(url="http://169.254.169.254/", streaming=True), text="hi")
    assert exc_info.value.code == "ssrf_blocked"


class _StatusServer:
    def __init__(self, status: int, body: bytes = b"{}", content_type: str = "application/json") -> None:
        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.reply(status, body, content_type)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def status_server(allow_loopback: None) -> Iterator[Any]:
    servers: list[_StatusServer] = []

    def make(status: int, body: bytes = b"{}", content_type: str = "application/json") -> str:
        server = _StatusServer(status, body, content_type)
        threading.Thread(target=server.server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

    yield make
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_transport_errors(status_server: Any, status: int) -> None:
    url = status_server(status)
    for is_streaming in (True, False):
        with pytest.raises(AgentTransportError) as exc_info:
            collect(AgentTarget(url=url, streaming=is_streaming), text="hi")
        assert exc_info.value.status_code == status


def test_4xx_is_an_agent_error(status_server: Any) -> None:
    with pytest.raises(AgentError) as exc_info:
        collect(AgentTarget(url=status_server(404)), text="hi")
    assert exc_info.value.code == "http_error"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"jsonrpc": "2.0", "id": "1"}', b'{"jsonrpc": "2.0", "id": "1", "result": {}}'],
)
def test_invalid_responses_are_agent_errors(status_server: Any, body: bytes) -> None:
    with pytest.raises(AgentError):
        collect(AgentTarget(url=status_server(200, body)), text="hi")


class _CutStreamAgent(QuietHandler):
    """Streams one 'working' update then hangs up; GetTask says the task is still `task_state`."""

    task_state = "TASK_STATE_WORKING"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        task = {"id": "t", "contextId": "c", "status": {"state": self.task_state}}
        if request["method"] == "GetTask":
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": task}).encode()
            content_type = "application/json"
        else:
            event = {"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_WORKING"}}}
            body = b"data: " + json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": event}).encode() + b"\n\n"
            content_type = "text/event-stream"
        self.reply(200, body, content_type)


@pytest.mark.parametrize(("state", "outcome"), [("TASK_STATE_WORKING", None), ("TASK_STATE_CANCELED", "canceled")])
def test_stream_cut_before_a_final_update(allow_loopback: None, state: str, outcome: str | None) -> None:
    """The task is re-read: a final state there ends the run normally, otherwise it is a transport error."""
    handler = type("Handler", (_CutStreamAgent,), {"task_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = AgentTarget(url=f"http://127.0.0.1:{server.server_address[1]}/", streaming=True)
    try:
        if outcome is None:
            with pytest.raises(AgentTransportError):
                collect(target, text="hi")
        else:
            assert collect(target, text="hi")[-1].state == outcome
    finally:
        server.shutdown()
        server.server_close()


class _NoResubscribeAgent(QuietHandler):
    """A streaming agent that refuses SubscribeToTask (JSON-RPC error); GetTask says working, then completed."""

    gets = 0

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if request["method"] == "GetTask":
            type(self).gets += 1
            state = "TASK_STATE_WORKING" if type(self).gets < 3 else "TASK_STATE_COMPLETED"
            reply = {"result": {"id": "t", "contextId": "c", "status": {"state": state}}}
        else:
            reply = {"error": {"code": -32004, "message": "This operation is not supported"}}
        self.reply(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], **reply}).encode())


def test_resume_falls_back_to_polling_when_the_agent_will_not_resubscribe(allow_loopback: None) -> None:
    handler = type("Handler", (_NoResubscribeAgent,), {"gets": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = AgentTarget(url=f"http://127.0.0.1:{server.server_address[1]}/", streaming=True)

    async def go() -> list[AgentUpdate]:
        async with AgentClient(target, poll_interval=0.01) as client:
            return [update async for update in client.resume("t")]

    try:
        updates = asyncio.run(asyncio.wait_for(go(), timeout=10))
    finally:
        server.shutdown()
        server.server_close()
    assert updates[0].state == "working" and updates[-1].state == "completed"
    assert handler.gets >= 3  # the snapshot, then polling after the refused subscription


def test_polled_snapshots_report_what_an_artifact_gained_since_the_last_poll() -> None:
    """A non-streaming agent appends chunks to an artifact between polls: each snapshot yields the parts that are
    new, as a stream yields a chunk (append), and an artifact replaced under the same id comes back whole."""
    from a2a.types.a2a_pb2 import (
        Artifact,
        Part,
        StreamResponse,
        Task,
        TaskArtifactUpdateEvent,
        TaskState,
        TaskStatus,
    )

    from apps.agents.client import _Normalizer

    def snapshot(*texts: str, name: str = "report") -> Task:
        artifact = Artifact(artifact_id="a1", name=name, parts=[Part(text=t) for t in texts])
        return Task(
            id="t1", context_id="c1", status=TaskStatus(state=TaskState.TASK_STATE_WORKING), artifacts=[artifact]
        )

    def artifacts(updates: list[AgentUpdate]) -> list[tuple[list[str], bool]]:
        return [
            ([p["text"] for p in u.artifact["parts"]], u.artifact.get("append", False))
            for u in updates
            if u.kind == "artifact" and u.artifact is not None
        ]

    polled = _Normalizer()
    assert artifacts(polled.task(snapshot("one"))) == [(["one"], False)]
    assert artifacts(polled.task(snapshot("one", "two", "three"))) == [(["two", "three"], True)]
    assert artifacts(polled.task(snapshot("one", "two", "three"))) == []  # nothing new: nothing said
    assert artifacts(polled.task(snapshot("new"))) == [(["new"], False)]  # replaced (append=False upstream)
    assert artifacts(polled.task(snapshot("new", name="renamed"))) == [(["new"], False)]

    # After a stream (cut short, say), the snapshot adds only what the streamed chunks did not already say.
    streamed = _Normalizer()
    for text, append in (("one", False), ("two", True)):
        chunk = Artifact(artifact_id="a1", name="report", parts=[Part(text=text)])
        event = StreamResponse(artifact_update=TaskArtifactUpdateEvent(task_id="t1", artifact=chunk, append=append))
        assert artifacts(streamed.event(event)) == [([text], append)]
    assert artifacts(streamed.task(snapshot("one", "two", "three"))) == [(["three"], True)]


def test_messages_need_content_and_carry_ids() -> None:
    with pytest.raises(AgentError):
        build_message()
    message = build_message(text="t", data=[{"a": [1, 2]}], metadata={"k": "v"}, task_id="T", context_id="C")
    assert (message.task_id, message.context_id, len(message.parts)) == ("T", "C", 2)
    assert message.metadata["k"] == "v"


def test_stored_parts_reach_the_agent_as_sent() -> None:
    """Each part of a task's input is its own A2A part, in order, with its metadata (not joined into one text)."""
    from google.protobuf import json_format

    from apps.tasks.execution import _message_kwargs

    stored = {
        "role": "user",
        "parts": [
            {"kind": "text", "text": "first"},
            {"kind": "data", "data": {"n": 1}, "metadata": {"source": "form"}},
            {"kind": "text", "text": "second", "metadata": {"lang": "en"}},
        ],
        "metadata": {"k": "v"},
    }
    message = build_message(**_message_kwargs(stored))
    assert [p.WhichOneof("content") for p in message.parts] == ["text", "data", "text"]
    assert (message.parts[0].text, message.parts[2].text) == ("first", "second")
    assert json_format.MessageToDict(message.parts[1].data) == {"n": 1.0}
    assert message.parts[1].metadata["source"] == "form" and message.parts[2].metadata["lang"] == "en"
    assert message.metadata["k"] == "v"
    with pytest.raises(AgentError):
        build_message(parts=[])


def test_iterate_sync_cancels_the_async_side_on_break() -> None:
    stopped = threading.Event()

    async def forever() -> Any:
        try:
            n = 0
            while True:
                n += 1
                yield n
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    for value in iterate_sync(forever):
        if value == 3:
            break
    assert stopped.wait(5)
