"""A task's `metadata` reaches its agent: as the A2A request's `metadata`, which the a2a-sdk's server hands the
executor as `RequestContext.metadata`, on the first message and on every follow-up (the message's own metadata
stays the message's).

The agent is written with the official a2a-sdk only and served over real HTTP on loopback under /stream/, /plain/
and /legacy/ (a v0.3 card; the SDK's compatibility transport carries the request metadata as `params.metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import Part
from google.protobuf import json_format, struct_pb2
from starlette.applications import Starlette
from starlette.routing import Mount

from apps.agents.actions import register_agent_by_url
from tests.tasks.agents import started
from tests.tasks.conftest import reload_task, timeline, wait_for
from tests.tasks.test_agent_output import _agent

pytestmark = pytest.mark.django_db(transaction=True)


class MetadataEchoExecutor(AgentExecutor):
    """Answers each message with what came with it — the request's metadata and the message's — as the data part
    of an artifact; asks for input when the text is "ask", and completes otherwise."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        message = context.message
        seen = struct_pb2.Value()
        json_format.ParseDict(
            {
                "request": context.metadata,
                "message": json_format.MessageToDict(message.metadata) if message is not None else {},
            },
            seen,
        )
        await updater.add_artifact([Part(data=seen)], name="seen")
        if context.get_user_input() == "ask":
            await updater.requires_input(updater.new_agent_message([Part(text="and then?")]))
        else:
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


@pytest.fixture(scope="module")
def metadata_agent() -> Iterator[str]:
    from tests.servers import DeferredApp, serve_asgi

    app = DeferredApp()
    with serve_asgi(app) as base:
        app.app = Starlette(routes=[Mount("/echo", _agent(f"{base}/echo", "Metadata", MetadataEchoExecutor()))])
        yield f"{base}/echo"


def seen_by_the_agent(task: Any) -> list[dict[str, Any]]:
    """What the agent said it was sent, per message, in order."""
    return [data["parts"][0]["data"] for kind, data in timeline(task) if kind == "artifact"]


def post(client: Any, url: str, body: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


TASK_METADATA = {"tm": "y", "n": 7, "nested": {"list": [1, "two", None, True]}}


@pytest.mark.parametrize("path", ["stream", "plain", "legacy"])
def test_the_tasks_metadata_is_the_request_metadata_of_each_message_the_agent_gets(
    task_worker: Any, metadata_agent: str, org: Any, alice: Any, client_for: Any, path: str
) -> None:
    # It was stored and counted in the input, but only a federated task sent it: a local agent saw `{}`.
    agent = register_agent_by_url(org=org, url=f"{metadata_agent}/{path}/")
    client = client_for(alice)
    body = {
        "agent": str(agent.pk),
        "input": {"parts": [{"text": "ask"}], "metadata": {"mm": "first"}},
        "metadata": TASK_METADATA,
    }
    response = post(client, "/api/v1/tasks", body)
    assert response.status_code == 202, response.content
    task = wait_for(lambda: (t := reload_task(response.json())).state == "input-required" and t)
    assert seen_by_the_agent(task) == [{"request": TASK_METADATA, "message": {"mm": "first"}}]

    follow_up = {"input": {"parts": [{"text": "done"}], "metadata": {"mm": "second"}}}
    assert post(client, f"/api/v1/tasks/{task.pk}/messages", follow_up).status_code == 202
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t)
    assert task.state == "completed", task.last_error
    assert seen_by_the_agent(task) == [
        {"request": TASK_METADATA, "message": {"mm": "first"}},
        {"request": TASK_METADATA, "message": {"mm": "second"}},
    ]


def test_a_task_without_metadata_sends_none(
    task_worker: Any, metadata_agent: str, org: Any, alice: Any, client_for: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{metadata_agent}/stream/")
    response = post(client_for(alice), "/api/v1/tasks", {"agent": str(agent.pk), "input": {"parts": [{"text": "hi"}]}})
    task = wait_for(lambda: (t := reload_task(response.json())).is_terminal and t)
    assert task.state == "completed", task.last_error
    assert seen_by_the_agent(task) == [{"request": {}, "message": {}}]
