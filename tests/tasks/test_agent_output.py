"""What an agent says is recorded as it said it, streamed or polled: a follow-up reports only what is new since the
earlier turn, and the agent's messages keep their parts (text, data, files, URLs).

The agents here are written with the official a2a-sdk only and served over real HTTP on loopback, each under
/stream/ (card says streaming), /plain/ (it does not) and /legacy/ (a v0.3 card, the SDK's v0.3 compatibility on).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from a2a.helpers import new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import Message, Part, Role, TaskState
from google.protobuf import json_format, struct_pb2
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from apps.agents.actions import register_agent_by_url
from apps.agents.client import AgentClient, AgentTarget, AgentUpdate, iterate_sync
from apps.tasks import actions
from apps.tasks.execution import observe
from apps.tasks.models import EventKind, TaskEvent
from tests.tasks.agents import card_at, started
from tests.tasks.conftest import reload_task, timeline, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class DraftingExecutor(AgentExecutor):
    """First turn: writes the artifact `draft`, then asks for input. The follow-up: writes `answer`, completes."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        if context.current_task is None:
            await updater.add_artifact([new_text_part("draft v1")], artifact_id="draft", name="draft")
            await updater.requires_input(updater.new_agent_message([new_text_part("which city?")]))
            return
        text = context.get_user_input()
        await updater.add_artifact([new_text_part(f"answer: {text}")], artifact_id="answer", name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def _data(value: Any) -> Part:
    built = struct_pb2.Value()
    json_format.ParseDict(value, built)
    part = Part(data=built)
    part.metadata.update({"source": "ledger"})
    return part


def file_parts() -> list[Part]:
    return [
        new_text_part("here is a file"),
        Part(raw=b"abc", filename="x.txt", media_type="text/plain"),
        Part(url="https://example.com/y.png", filename="y.png", media_type="image/png"),
        _data({"rows": 3}),
    ]


# What Hermes records of file_parts(): each part as the agent sent it, the raw bytes base64 as in an artifact.
RECORDED_PARTS: list[dict[str, Any]] = [
    {"kind": "text", "text": "here is a file"},
    {"kind": "raw", "raw": base64.b64encode(b"abc").decode(), "filename": "x.txt", "mediaType": "text/plain"},
    {"kind": "url", "url": "https://example.com/y.png", "filename": "y.png", "mediaType": "image/png"},
    {"kind": "data", "data": {"rows": 3}, "metadata": {"source": "ledger"}},
]


PROGRESS_PAUSE = 0.5  # five polls at the tests' pace (fast_tasks)


class FileSayingExecutor(AgentExecutor):
    """Says file_parts() in the way its input names: "complete", "ask" (then completes with the follow-up, saying
    it again), "fail", "message" (a plain Message instead of a task) or "progress" (a working status message)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if text == "message":
            reply = Message(role=Role.ROLE_AGENT, message_id="files-1", parts=file_parts())
            await event_queue.enqueue_event(reply)
            return
        updater = await started(context, event_queue)
        said = updater.new_agent_message(file_parts())
        if text == "ask":
            await updater.requires_input(said)
        elif text == "fail":
            await updater.failed(said)
        elif text == "progress":
            await updater.update_status(TaskState.TASK_STATE_WORKING, message=said)
            await asyncio.sleep(PROGRESS_PAUSE)  # a polled agent's progress is seen only while it lasts
            await updater.add_artifact(file_parts(), artifact_id="files", name="files")
            await updater.complete()
        else:
            await updater.complete(said)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def _legacy_card(url: str, name: str) -> dict[str, Any]:
    return {
        "name": f"Legacy {name}",
        "description": "Announces A2A 0.3",
        "version": "0.3.9",
        "url": url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": {"streaming": False},
        "defaultInputModes": ["text"],
        "defaultOutputModes": ["text"],
        "skills": [{"id": "test", "name": name, "description": name, "tags": []}],
    }


def _agent(base: str, name: str, executor: AgentExecutor) -> Starlette:
    """`executor` under /stream/, /plain/ and /legacy/ of `base`, each with its own task store."""
    mounts = []
    for path in ("stream", "plain", "legacy"):
        url = f"{base}/{path}/"
        card = card_at(url, name, streaming=path == "stream")
        handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
        routes: list[Any] = [*create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)]
        if path == "legacy":
            legacy = _legacy_card(url, name)

            async def legacy_card(request: Any, legacy: dict[str, Any] = legacy) -> JSONResponse:
                return JSONResponse(legacy)

            routes.append(Route("/.well-known/agent.json", legacy_card))
        else:
            routes += create_agent_card_routes(card)
        mounts.append(Mount(f"/{path}", Starlette(routes=routes)))
    return Starlette(routes=mounts)


@pytest.fixture(scope="module")
def output_agents() -> Iterator[str]:
    from tests.servers import DeferredApp, serve_asgi

    app = DeferredApp()
    with serve_asgi(app) as base:
        app.app = Starlette(
            routes=[
                Mount("/drafting", _agent(f"{base}/drafting", "Drafting", DraftingExecutor())),
                Mount("/files", _agent(f"{base}/files", "Files", FileSayingExecutor())),
            ]
        )
        yield base


def text(value: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"kind": "text", "text": value}]}


def finished(task: Any) -> Any:
    return wait_for(lambda: (t := reload_task(task)).is_terminal and t)


def waiting(task: Any) -> Any:
    return wait_for(lambda: (t := reload_task(task)).state == "input-required" and t)


def artifacts(task: Any) -> list[dict[str, Any]]:
    return [data for kind, data in timeline(task) if kind == "artifact"]


def last_state_data(task: Any) -> dict[str, Any]:
    event = TaskEvent.objects.unscoped("test").filter(task_id=task.pk, kind="state").order_by("-seq").first()
    assert event is not None
    data: dict[str, Any] = event.data
    return data


# Defect A: a follow-up on a polled agent re-recorded the earlier turn's artifacts (its first GetTask snapshot
# still holds them).


@pytest.mark.parametrize("path", ["stream", "plain", "legacy"])
def test_a_follow_up_records_only_what_the_agent_added_since_the_earlier_turn(
    task_worker: Any, output_agents: str, org: Any, path: str
) -> None:
    agent = register_agent_by_url(org=org, url=f"{output_agents}/drafting/{path}/")
    assert agent.streaming == (path == "stream")
    task = actions.create_task(org=org, agent=agent, message=text("write"))
    asked = waiting(task)
    assert [a["artifact_id"] for a in artifacts(asked)] == ["draft"]
    actions.continue_task(asked, message=text("Paris"))
    task = finished(task)
    assert task.state == "completed", task.last_error
    assert [(a["artifact_id"], a["parts"], a["append"]) for a in artifacts(task)] == [
        ("draft", [{"kind": "text", "text": "draft v1"}], False),
        ("answer", [{"kind": "text", "text": "answer: Paris"}], False),
    ]
    kinds = [kind if kind != "state" else f"state:{data}" for kind, data in timeline(task)]
    assert kinds[-4:] == ["message", "state:working", "artifact", "state:completed"]


def collect(target: AgentTarget, **message: Any) -> list[AgentUpdate]:
    return list(iterate_sync(lambda: AgentClient(target).run_once(**message)))


@pytest.mark.parametrize("path", ["stream", "plain", "legacy"])
def test_the_client_reports_a_follow_ups_artifacts_once(output_agents: str, settings: Any, path: str) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    target = AgentTarget(
        url=f"{output_agents}/drafting/{path}/",
        streaming=path == "stream",
        protocol_version="0.3.0" if path == "legacy" else "1.0",
    )
    first = collect(target, text="write")
    asked = first[-1]
    assert asked.state == "input-required"
    assert [u.artifact["artifactId"] for u in first if u.artifact] == ["draft"]
    second = collect(target, text="Paris", task_id=asked.remote_task_id, context_id=asked.context_id)
    assert second[-1].state == "completed"
    assert [u.artifact["artifactId"] for u in second if u.artifact] == ["answer"]


# Defect B: the agent's messages were flattened to one text part (the URL as text, the file dropped).


def said(data: dict[str, Any]) -> list[dict[str, Any]]:
    message: dict[str, Any] = data["message"]
    assert message["role"] == "agent"
    parts: list[dict[str, Any]] = message["parts"]
    return parts


@pytest.mark.parametrize("path", ["stream", "plain", "legacy"])
def test_the_message_a_task_completes_with_keeps_its_parts(
    task_worker: Any, output_agents: str, org: Any, path: str
) -> None:
    agent = register_agent_by_url(org=org, url=f"{output_agents}/files/{path}/")
    task = finished(actions.create_task(org=org, agent=agent, message=text("complete")))
    assert task.state == "completed", task.last_error
    assert said(last_state_data(task)) == RECORDED_PARTS


@pytest.mark.parametrize("path", ["stream", "plain", "legacy"])
def test_a_plain_message_answer_keeps_its_parts(task_worker: Any, output_agents: str, org: Any, path: str) -> None:
    agent = register_agent_by_url(org=org, url=f"{output_agents}/files/{path}/")
    task = finished(actions.create_task(org=org, agent=agent, message=text("message")))
    assert task.state == "completed", task.last_error
    assert said(last_state_data(task)) == RECORDED_PARTS


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_the_question_and_the_failure_keep_their_parts(
    task_worker: Any, output_agents: str, org: Any, path: str
) -> None:
    agent = register_agent_by_url(org=org, url=f"{output_agents}/files/{path}/")
    task = actions.create_task(org=org, agent=agent, message=text("ask"))
    asked = waiting(task)
    assert said(last_state_data(asked)) == RECORDED_PARTS
    assert asked.last_error == ""
    actions.continue_task(asked, message=text("Paris"))
    task = finished(task)
    assert task.state == "completed" and said(last_state_data(task)) == RECORDED_PARTS
    failed = finished(actions.create_task(org=org, agent=agent, message=text("fail")))
    assert failed.state == "failed" and said(last_state_data(failed)) == RECORDED_PARTS
    # last_error reads the failure's text parts: the file and the URL are in the timeline, not in the reason.
    assert failed.last_error == "here is a file"


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_a_progress_message_keeps_its_parts_as_an_artifact_does(
    task_worker: Any, output_agents: str, org: Any, path: str
) -> None:
    agent = register_agent_by_url(org=org, url=f"{output_agents}/files/{path}/")
    task = finished(actions.create_task(org=org, agent=agent, message=text("progress")))
    assert task.state == "completed", task.last_error
    events = timeline(task)
    progress = [data for kind, data in events if kind == "progress"]
    assert progress == [{"role": "agent", "parts": RECORDED_PARTS}]
    assert [a["parts"] for a in artifacts(task)] == [RECORDED_PARTS]


def test_the_clients_updates_carry_the_parts_and_still_read_text_and_data(output_agents: str, settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    parts = [{k: v for k, v in p.items() if k != "kind"} for p in RECORDED_PARTS]
    for streaming in (True, False):
        target = AgentTarget(url=f"{output_agents}/files/{'stream' if streaming else 'plain'}/", streaming=streaming)
        (reply,) = collect(target, text="message")
        done = collect(target, text="complete")[-1]
        for update in (reply, done):
            assert update.parts == parts
            assert (update.text, update.data) == ("here is a file\nhttps://example.com/y.png", [{"rows": 3}])


def test_a_status_message_of_one_empty_text_part_is_no_progress_line() -> None:
    # Some agents send one with every status; only the text was read before, so it recorded nothing.
    quiet = observe(AgentUpdate(kind="status", state="working", parts=[{"text": ""}]))
    assert (quiet.kind, quiet.data) == (EventKind.STATE, {})
    file_only = observe(AgentUpdate(kind="status", state="working", parts=[{"url": "https://example.com/y.png"}]))
    assert (file_only.kind, file_only.data) == (
        EventKind.PROGRESS,
        {"role": "agent", "parts": [{"kind": "url", "url": "https://example.com/y.png"}]},
    )
