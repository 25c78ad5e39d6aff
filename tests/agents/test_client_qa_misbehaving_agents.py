"""The A2A client against agents that misbehave, served as raw JSON-RPC/SSE over loopback HTTP: events about
another task, a message in the middle of a task's stream, progress notes that share a message id, a reply that
never comes, errors carrying data, retry hints and redirects."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from apps.agents import client as agent_client
from apps.agents.client import (
    AgentClient,
    AgentError,
    AgentTarget,
    AgentTransportError,
    AgentUpdate,
    _Normalizer,
    iterate_sync,
)
from tests.servers import QuietHandler

STREAM_METHODS = {"SendStreamingMessage", "message/stream"}
SEND_METHODS = {"SendMessage", "message/send"}


class ScriptedAgent:
    """A JSON-RPC endpoint answering from a script the test fills in: SendStreamingMessage with `stream` (one SSE
    event per result), SendMessage with `reply`, each GetTask with the next of `snapshots` (the last again once
    they run out); `error`, when set, answers every call instead. Every answer comes `pause` seconds late, with
    `http_status` and `extra_headers`."""

    def __init__(self) -> None:
        self.stream: list[dict[str, Any]] = []
        self.reply: dict[str, Any] = {}
        self.snapshots: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.extra_headers: dict[str, str] = {}
        self.http_status = 200
        self.pause = 0.0
        self.calls: list[str] = []
        self.stop = threading.Event()
        agent = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                agent.calls.append(request["method"])
                if agent.stop.wait(agent.pause):
                    return
                self.send_response(agent.http_status)
                for name, value in agent.extra_headers.items():
                    self.send_header(name, value)
                content_type, body = agent.answer(request)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def answer(self, request: dict[str, Any]) -> tuple[str, bytes]:
        def rpc(**outcome: Any) -> bytes:
            return json.dumps({"jsonrpc": "2.0", "id": request["id"], **outcome}).encode()

        if self.error is not None:
            return "application/json", rpc(error=self.error)
        if request["method"] in STREAM_METHODS:
            return "text/event-stream", b"".join(b"data: " + rpc(result=event) + b"\n\n" for event in self.stream)
        if request["method"] in SEND_METHODS:
            return "application/json", rpc(result=self.reply)
        snapshot = self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]
        return "application/json", rpc(result=snapshot)


@pytest.fixture
def scripted(allow_loopback: None) -> Iterator[Callable[[], ScriptedAgent]]:
    agents: list[ScriptedAgent] = []

    def make() -> ScriptedAgent:
        agent = ScriptedAgent()
        threading.Thread(target=agent.server.serve_forever, daemon=True).start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop.set()
        agent.server.shutdown()
        agent.server.server_close()


def status(state: str, text: str | None = None, message_id: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"state": f"TASK_STATE_{state}"}
    if text is not None:
        value["message"] = {"role": "ROLE_AGENT", "parts": [{"text": text}]}
        if message_id is not None:
            value["message"]["messageId"] = message_id
    return value


def task(state: str, task_id: str = "t1", *, artifacts: tuple[str, ...] = (), **message: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "contextId": "c1",
        "status": status(state, **message),
        "artifacts": [{"artifactId": f"a-{text}", "parts": [{"text": text}]} for text in artifacts],
    }


def status_update(state: str, task_id: str = "t1", **message: Any) -> dict[str, Any]:
    return {"statusUpdate": {"taskId": task_id, "contextId": "c1", "status": status(state, **message)}}


def artifact_update(text: str, task_id: str = "t1") -> dict[str, Any]:
    artifact = {"artifactId": f"a-{text}", "parts": [{"text": text}]}
    return {"artifactUpdate": {"taskId": task_id, "contextId": "c1", "artifact": artifact, "lastChunk": True}}


def run(target: AgentTarget, **message: Any) -> list[AgentUpdate]:
    message.setdefault("text", "hi")
    return list(iterate_sync(lambda: AgentClient(target, poll_interval=0.01).run_once(**message)))


def streaming(agent: ScriptedAgent) -> AgentTarget:
    return AgentTarget(url=agent.url, streaming=True)


def polled(agent: ScriptedAgent) -> AgentTarget:
    return AgentTarget(url=agent.url, streaming=False)


def states(updates: list[AgentUpdate]) -> list[tuple[str, str | None, str]]:
    return [(u.kind, u.state, u.text) for u in updates]


def dropped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "apps.agents.client" and r.levelno == logging.WARNING]


# --- 1. Events about another task, and a message after the task ---------------------------------------------------


def test_a_status_update_for_another_task_does_not_fail_the_followed_one(
    scripted: Callable[[], ScriptedAgent], caplog: pytest.LogCaptureFixture
) -> None:
    agent = scripted()
    agent.stream = [{"task": task("SUBMITTED")}, status_update("FAILED", "other"), status_update("COMPLETED")]
    caplog.set_level(logging.WARNING, logger="apps.agents.client")
    updates = run(streaming(agent))
    assert states(updates) == [("status", "submitted", ""), ("status", "completed", "")]
    assert {u.remote_task_id for u in updates} == {"t1"}  # not overwritten with the other task's id
    assert dropped(caplog) == ["Dropped the agent's status update for task other: this call follows task t1."]


def test_an_artifact_for_another_task_is_not_recorded(
    scripted: Callable[[], ScriptedAgent], caplog: pytest.LogCaptureFixture
) -> None:
    agent = scripted()
    agent.stream = [
        {"task": task("WORKING")},
        artifact_update("foreign", "other"),
        artifact_update("ours"),
        status_update("COMPLETED"),
    ]
    caplog.set_level(logging.WARNING, logger="apps.agents.client")
    updates = run(streaming(agent))
    assert [u.text for u in updates if u.kind == "artifact"] == ["ours"]
    assert updates[-1].state == "completed"
    assert dropped(caplog) == ["Dropped the agent's artifact update for task other: this call follows task t1."]


def test_a_message_in_the_middle_of_a_tasks_stream_does_not_complete_it(
    scripted: Callable[[], ScriptedAgent], caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's client ends the stream at the message; the task's own snapshot then says how it ended."""
    agent = scripted()
    hijack = {"message": {"messageId": "m9", "role": "ROLE_AGENT", "parts": [{"text": "hijacked"}]}}
    agent.stream = [{"task": task("WORKING")}, hijack, artifact_update("real"), status_update("COMPLETED")]
    agent.snapshots = [task("COMPLETED", artifacts=("real",))]
    caplog.set_level(logging.WARNING, logger="apps.agents.client")
    updates = run(streaming(agent))
    assert states(updates) == [("status", "working", ""), ("artifact", None, "real"), ("status", "completed", "")]
    assert dropped(caplog) == ["Dropped the agent's message m9: it came after task t1 in the same stream."]


def test_a_first_and_only_message_is_still_the_result(scripted: Callable[[], ScriptedAgent]) -> None:
    agent = scripted()
    answer = {"messageId": "m1", "taskId": "t1", "role": "ROLE_AGENT", "parts": [{"text": "done"}]}
    agent.stream = [{"message": answer}]
    agent.reply = {"message": answer}
    for target in (streaming(agent), polled(agent)):
        assert states(run(target)) == [("message", "completed", "done")]


def test_a_polled_snapshot_of_another_task_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    from a2a.types.a2a_pb2 import Task, TaskState, TaskStatus

    normalizer = _Normalizer()
    caplog.set_level(logging.WARNING, logger="apps.agents.client")
    assert [u.state for u in normalizer.task(Task(id="t1", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)))]
    assert normalizer.task(Task(id="t2", status=TaskStatus(state=TaskState.TASK_STATE_FAILED))) == []
    assert not normalizer.final
    assert dropped(caplog) == ["Dropped the agent's task for task t2: this call follows task t1."]


# --- 2. Progress notes that share a message id, or have none -------------------------------------------------------


@pytest.mark.parametrize("message_id", ["same", None])
def test_every_distinct_progress_note_is_reported_streamed_or_polled(
    scripted: Callable[[], ScriptedAgent], message_id: str | None
) -> None:
    agent = scripted()
    notes = [{"text": f"step {n}", "message_id": message_id} for n in (0, 1, 2, 2)]  # the last one said twice
    agent.stream = [
        {"task": task("SUBMITTED")},
        *(status_update("WORKING", **note) for note in notes),
        status_update("COMPLETED"),
    ]
    agent.reply = {"task": task("SUBMITTED")}
    agent.snapshots = [*(task("WORKING", **note) for note in notes), task("COMPLETED")]
    for target in (streaming(agent), polled(agent)):
        progress = [u.text for u in run(target) if u.state == "working"]
        assert progress == ["step 0", "step 1", "step 2"]


# --- 3. A SendMessage that never answers times out on the 30 s read timeout, not the stream's 60 s -----------------


def test_only_streams_wait_as_long_as_the_stream_timeout(
    scripted: Callable[[], ScriptedAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (agent_client.CALL_TIMEOUT.read, agent_client.STREAM_TIMEOUT.read) == (30.0, 60.0)  # docs/agents.md
    monkeypatch.setattr(agent_client, "CALL_TIMEOUT", httpx.Timeout(0.3, connect=5.0))
    monkeypatch.setattr(agent_client, "STREAM_TIMEOUT", httpx.Timeout(5.0, connect=5.0))
    agent = scripted()
    agent.pause = 1.0  # longer than a call may wait, well within a stream's wait
    agent.reply = {"task": task("COMPLETED")}
    agent.stream = [{"task": task("COMPLETED")}]
    started = time.monotonic()
    with pytest.raises(AgentTransportError) as exc_info:
        run(polled(agent))
    assert time.monotonic() - started < 0.9
    assert str(exc_info.value).startswith("Timed out talking to the agent")
    assert run(streaming(agent))[-1].state == "completed"


# --- 4. One full stop at the end of an error -----------------------------------------------------------------------


class _HangUpHandler(QuietHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.close_connection = True  # no response at all


def test_a_connection_closed_without_an_answer_is_said_with_one_full_stop(allow_loopback: None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HangUpHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for is_streaming in (True, False):
            target = AgentTarget(url=f"http://127.0.0.1:{server.server_address[1]}/", streaming=is_streaming)
            with pytest.raises(AgentTransportError) as exc_info:
                run(target)
            assert str(exc_info.value) == "Could not talk to the agent: Server disconnected without sending a response."
    finally:
        server.shutdown()
        server.server_close()


# --- 5. A task failed without a reason ------------------------------------------------------------------------------


def test_a_task_failed_without_a_message_is_reported_as_the_agent_said_it(
    sdk_agent_base: str, allow_loopback: None
) -> None:
    """The SDK's server fails a polled task whose executor raised without any status message: the client reports
    just that (the task's reason is Hermes' to give, in apps.tasks.actions, not words put in the agent's mouth)."""
    updates = run(AgentTarget(url=f"{sdk_agent_base}/plain/", streaming=False), text="boom")
    last = updates[-1]
    assert (last.state, last.parts) == ("failed", [])
    assert "message" not in last.raw["task"]["status"]


def test_a_failure_with_a_reason_keeps_the_agents_words() -> None:
    from a2a.types.a2a_pb2 import Message, Part, Task, TaskState, TaskStatus

    said = TaskStatus(state=TaskState.TASK_STATE_FAILED, message=Message(message_id="m", parts=[Part(text="no")]))
    assert _Normalizer().task(Task(id="t", status=said))[-1].text == "no"


# --- 6. A JSON-RPC error's data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol_version", ["1.0", "0.3.0"])
def test_a_json_rpc_errors_data_is_kept(scripted: Callable[[], ScriptedAgent], protocol_version: str) -> None:
    agent = scripted()
    agent.error = {"code": -32603, "message": "database on fire", "data": {"hint": "call later"}}
    for is_streaming in (True, False):
        target = AgentTarget(url=agent.url, streaming=is_streaming, protocol_version=protocol_version)
        with pytest.raises(AgentError) as exc_info:
            run(target)
        assert str(exc_info.value) == 'The agent returned an error: database on fire (data: {"hint":"call later"})'
        assert exc_info.value.code == "InternalError"
        assert exc_info.value.details == {"data": {"hint": "call later"}}


def test_a_long_error_data_is_quoted_in_part(scripted: Callable[[], ScriptedAgent]) -> None:
    agent = scripted()
    agent.error = {"code": -32603, "message": "boom", "data": {"trace": "x" * 5000}}
    with pytest.raises(AgentError) as exc_info:
        run(polled(agent))
    quoted = str(exc_info.value).removeprefix("The agent returned an error: boom (data: ").removesuffix(")")
    assert len(quoted) == agent_client.ERROR_DATA_CHARS and quoted.startswith('{"trace":"xxx') and quoted[-1] == "…"
    assert exc_info.value.details["data"] == {"trace": "x" * 5000}  # whole, for whoever reads the details


# --- 7. What the agent answered, and when it asks to be called again ---------------------------------------------


def test_an_agent_answering_500_is_said_to_have_answered(scripted: Callable[[], ScriptedAgent]) -> None:
    agent = scripted()
    agent.http_status = 500
    for target in (streaming(agent), polled(agent)):
        with pytest.raises(AgentTransportError) as exc_info:
            run(target)
        assert str(exc_info.value) == "The agent answered HTTP 500 (Internal Server Error)."
        assert (exc_info.value.status_code, exc_info.value.retry_after) == (500, None)


def test_retry_after_is_exposed_on_the_transport_error(scripted: Callable[[], ScriptedAgent]) -> None:
    agent = scripted()
    agent.http_status, agent.extra_headers = 429, {"Retry-After": "30"}
    for target in (streaming(agent), polled(agent)):
        with pytest.raises(AgentTransportError) as exc_info:
            run(target)
        assert exc_info.value.retry_after == 30.0 and exc_info.value.status_code == 429
        assert str(exc_info.value) == (
            "The agent answered HTTP 429 (Too Many Requests); it asks to be called again in 30 s."
        )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def header(value: str) -> float | None:
        return agent_client.retry_after(httpx.Response(503, headers={"Retry-After": value}))

    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert header("30") == 30.0 and header("0") == 0.0
    assert 100 < (header(later) or 0) <= 120
    assert header(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0  # a date past: now
    assert header("soon") is None and header("nan") is None
    assert agent_client.retry_after(httpx.Response(503)) is None


# --- 8. An agent URL that redirects -----------------------------------------------------------------------------


def test_an_agent_that_redirects_is_told_apart_from_an_http_error(sdk_agent_base: str, allow_loopback: None) -> None:
    """Registered without its trailing slash, the SDK agent's server redirects every call to the URL with one."""
    for is_streaming in (True, False):
        with pytest.raises(AgentError) as exc_info:
            run(AgentTarget(url=f"{sdk_agent_base}/stream", streaming=is_streaming))
        assert str(exc_info.value) == (
            f"The agent redirected to {sdk_agent_base}/stream/ (HTTP 307); Hermes does not follow redirects for "
            "agent calls: register the agent with its final URL."
        )
        assert exc_info.value.details == {"status": 307, "location": f"{sdk_agent_base}/stream/"}


def test_the_client_closes_both_of_its_http_clients(scripted: Callable[[], ScriptedAgent]) -> None:
    agent = scripted()
    agent.stream = [{"task": task("COMPLETED")}]
    agent.snapshots = [task("COMPLETED")]

    async def go() -> list[bool]:
        client = AgentClient(streaming(agent))
        async with client:
            [u async for u in client.run(text="hi")]
            await client.get_task("t1")
        return [http.is_closed for http in client._http.values()]

    assert asyncio.run(go()) == [True, True]
