"""Findings of a QA round with agents built on the official a2a-sdk (1.3.0): what such an agent says or declares is
kept, streamed or polled.

The agents are written with the SDK's server pieces only and served over real HTTP on loopback, each under
/stream/ (the card says streaming) and /plain/ (it does not: SendMessage, then GetTask polling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCard,
    APIKeySecurityScheme,
    Artifact,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskArtifactUpdateEvent,
    TaskState,
)
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount

from apps.agents.actions import register_agent_by_url
from apps.agents.cards import calling_terms
from apps.agents.client import AgentTarget
from apps.tasks import actions
from apps.tasks.models import EventKind, TaskEvent
from apps.tasks.models import TaskState as HermesState
from apps.tasks.serializers import TaskEventSerializer
from tests.tasks.agents import card_at, started
from tests.tasks.conftest import reload_task, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE_WAIT = 0.5  # five polls at the tests' pace (fast_tasks)


def _text(update: TaskUpdater, value: str) -> Any:
    return update.new_agent_message([new_text_part(value)])


class QueuedExecutor(AgentExecutor):
    """Says where the task is in its queue with the `submitted` state (TaskUpdater.submit), which reaches Hermes
    after its worker moved the task to working, then starts, writes an artifact and completes."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        # Not `started` (which moves to working at once): this agent stays submitted for a while.
        task = context.current_task or new_task_from_user_message(context.message)  # type: ignore[arg-type]
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.submit(_text(updater, "queued: you are number 3 in line"))
        await asyncio.sleep(QUEUE_WAIT)
        await updater.start_work(_text(updater, "started"))
        await updater.add_artifact([new_text_part("result")], name="q")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class DescribedExecutor(AgentExecutor):
    """An artifact with a description and metadata, and a final message with metadata."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        artifact = Artifact(artifact_id="d1", name="report", description="Quarterly report, EUR")
        artifact.parts.append(new_text_part("42"))
        artifact.metadata.update({"currency": "EUR"})
        await event_queue.enqueue_event(
            TaskArtifactUpdateEvent(task_id=updater.task_id, context_id=updater.context_id, artifact=artifact)
        )
        done = _text(updater, "done")
        done.metadata.update({"confidence": 0.9})
        await updater.complete(done)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


NOTE_PAUSE = 0.35  # over three polls at the tests' pace


class NotesExecutor(AgentExecutor):
    """Three progress notes at once (a polled agent's GetTask sees only the last in the status; the others are in
    the task's history), one more after a pause, then completes with a message."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        await asyncio.sleep(NOTE_PAUSE)
        for number in (1, 2, 3):
            await updater.update_status(TaskState.TASK_STATE_WORKING, message=_text(updater, f"note {number}"))
        await asyncio.sleep(NOTE_PAUSE)
        await updater.update_status(TaskState.TASK_STATE_WORKING, message=_text(updater, "note 4"))
        await asyncio.sleep(NOTE_PAUSE)
        await updater.complete(_text(updater, "done"))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class TenantExecutor(AgentExecutor):
    """Serves the tenant `acme` only, as a multi-tenant agent behind one URL does."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        if context.tenant != "acme":
            await updater.reject(_text(updater, f"unknown tenant {context.tenant!r}"))
            return
        await updater.add_artifact([new_text_part(f"tenant={context.tenant}")], name="tenant")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class PlainExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        await updater.complete(_text(updater, "ok"))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def _with_tenant(card: AgentCard) -> AgentCard:
    card.supported_interfaces[0].tenant = "acme"
    return card


def _secured(card: AgentCard) -> AgentCard:
    card.security_schemes["key"].CopyFrom(
        SecurityScheme(api_key_security_scheme=APIKeySecurityScheme(location="header", name="X-API-Key"))
    )
    card.security_requirements.append(SecurityRequirement(schemes={"key": StringList()}))
    return card


def _requiring_key(app: Any) -> Any:
    """`app`, answering 401 to any call without X-API-Key (its card is public, as the well-known path is)."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and scope["method"] == "POST" and b"x-api-key" not in headers:
            await JSONResponse({"error": "missing X-API-Key"}, status_code=401)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


def _agent(base: str, name: str, executor: AgentExecutor, shape: Any = None, wrap: Any = None) -> Starlette:
    mounts = []
    for path in ("stream", "plain"):
        card = card_at(f"{base}/{path}/", name, streaming=path == "stream")
        if shape is not None:
            card = shape(card)
        handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
        app: Any = Starlette(routes=[*create_jsonrpc_routes(handler, "/"), *create_agent_card_routes(card)])
        mounts.append(Mount(f"/{path}", wrap(app) if wrap else app))
    return Starlette(routes=mounts)


@pytest.fixture(scope="module")
def sdk_agents() -> Iterator[str]:
    from tests.servers import DeferredApp, serve_asgi

    app = DeferredApp()
    with serve_asgi(app) as base:
        app.app = Starlette(
            routes=[
                Mount("/queued", _agent(f"{base}/queued", "Queued", QueuedExecutor())),
                Mount("/described", _agent(f"{base}/described", "Described", DescribedExecutor())),
                Mount("/notes", _agent(f"{base}/notes", "Notes", NotesExecutor())),
                Mount("/tenant", _agent(f"{base}/tenant", "Tenant", TenantExecutor(), _with_tenant)),
                Mount("/secured", _agent(f"{base}/secured", "Secured", PlainExecutor(), _secured, _requiring_key)),
            ]
        )
        yield base


def text(value: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"kind": "text", "text": value}]}


def run_task(org: Any, url: str) -> Any:
    agent = register_agent_by_url(org=org, url=url)
    task = actions.create_task(org=org, agent=agent, message=text("x"))
    return wait_for(lambda: (t := reload_task(task)).is_terminal and t)


def events_of(task: Any) -> list[tuple[str, dict[str, Any]]]:
    rows = TaskEvent.objects.unscoped("test").filter(task_id=task.pk).order_by("seq")
    return [(event.kind, event.data) for event in rows]


def said(events: list[tuple[str, dict[str, Any]]], *kinds: str) -> list[str]:
    """The text of every agent message recorded as one of `kinds` (a state's message counts as "state")."""
    texts = []
    for kind, data in events:
        message = data.get("message") if kind == "state" else data
        if kind in kinds and isinstance(message, dict) and message.get("role") == "agent":
            texts += [part["text"] for part in message["parts"] if part.get("kind") == "text"]
    return texts


# 1. An agent's message sent with a state Hermes will not move to (its `submitted`, after the worker moved the task
# to working) was dropped with the state.


def test_a_message_with_a_state_not_applied_is_kept_as_a_message_event(org: Any) -> None:
    from tests.tasks.conftest import make_agent

    task = actions.create_task(org=org, agent=make_agent(org), message=text("x"))
    task = actions.record(task, [actions.Observation(kind=EventKind.STATE, data={}, state=HermesState.WORKING)])
    queued = {"role": "agent", "parts": [{"kind": "text", "text": "queued"}]}
    task = actions.record(
        task, [actions.Observation(kind=EventKind.STATE, data={"message": queued}, state=HermesState.SUBMITTED)]
    )
    assert task.state == HermesState.WORKING
    assert events_of(task)[-1] == ("message", queued)


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_an_agents_submitted_message_is_recorded(task_worker: Any, sdk_agents: str, org: Any, path: str) -> None:
    task = run_task(org, f"{sdk_agents}/queued/{path}/")
    assert task.state == "completed", task.last_error
    events = events_of(task)
    assert said(events, "message", "progress") == ["queued: you are number 3 in line", "started"]
    assert [data["to"] for kind, data in events if kind == "state"] == ["submitted", "working", "completed"]


# 3. An artifact's description and metadata, and the agent message's metadata, were not recorded.


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_artifact_description_and_metadata_and_message_metadata_are_kept(
    task_worker: Any, sdk_agents: str, org: Any, path: str
) -> None:
    task = run_task(org, f"{sdk_agents}/described/{path}/")
    assert task.state == "completed", task.last_error
    events = events_of(task)
    (artifact,) = [data for kind, data in events if kind == "artifact"]
    assert artifact["description"] == "Quarterly report, EUR"
    assert artifact["metadata"] == {"currency": "EUR"}
    assert artifact["parts"] == [{"kind": "text", "text": "42"}]
    assert events[-1][1]["message"] == {
        "role": "agent",
        "parts": [{"kind": "text", "text": "done"}],
        "metadata": {"confidence": 0.9},
    }


# 4. A polled agent's status messages replaced before the next GetTask (they are then in the task's history) were
# never recorded.


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_every_progress_note_is_recorded_once_polled_or_streamed(
    task_worker: Any, sdk_agents: str, org: Any, path: str
) -> None:
    task = run_task(org, f"{sdk_agents}/notes/{path}/")
    assert task.state == "completed", task.last_error
    events = events_of(task)
    assert said(events, "progress") == ["note 1", "note 2", "note 3", "note 4"]
    assert said(events, "message") == []
    assert said(events, "state") == ["done"]


# 2. The card interface's tenant was not sent: a multi-tenant agent rejected every task.


@pytest.mark.parametrize("path", ["stream", "plain"])
def test_the_card_interfaces_tenant_is_sent(task_worker: Any, sdk_agents: str, org: Any, path: str) -> None:
    task = run_task(org, f"{sdk_agents}/tenant/{path}/")
    assert task.state == "completed", task.last_error
    (artifact,) = [data for kind, data in events_of(task) if kind == "artifact"]
    assert artifact["parts"] == [{"kind": "text", "text": "tenant=acme"}]
    assert AgentTarget.from_agent(task.agent).tenant == "acme"


# 5. An agent whose card requires credentials failed every task with a bare "HTTP 401".


def test_a_401_from_an_agent_whose_card_requires_credentials_names_them(
    task_worker: Any, sdk_agents: str, org: Any
) -> None:
    task = run_task(org, f"{sdk_agents}/secured/stream/")
    assert task.state == "failed"
    assert task.last_error == (
        "The agent answered HTTP 401 (Unauthorized): the agent's card requires X-API-Key (apiKey in header); "
        "Hermes does not send agent credentials."
    )


def test_calling_terms_read_the_cards_tenant_and_required_schemes() -> None:
    card = _with_tenant(card_at("http://agent.example/", "A", streaming=False))
    card.security_schemes["bearer"].CopyFrom(
        SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
    )
    card.security_schemes["unused"].CopyFrom(
        SecurityScheme(api_key_security_scheme=APIKeySecurityScheme(location="query", name="k"))
    )
    card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    terms = calling_terms(json_format.MessageToDict(card))
    assert (terms.tenant, terms.required_credentials) == ("acme", ("bearer (HTTP Bearer)",))
    del card.security_requirements[:]  # schemes declared, none named as required: each may be what it wants
    assert calling_terms(json_format.MessageToDict(card)).required_credentials == (
        "bearer (HTTP Bearer)",
        "k (apiKey in query)",
    )
    assert calling_terms({}) == calling_terms({"name": "not a card", "skills": "x"})
    assert calling_terms({}).tenant == "" and calling_terms({}).required_credentials == ()


# 6. The live surfaces wrote an event's created_at as "+00:00", the REST API as "Z".


def test_the_live_surfaces_write_created_at_as_the_rest_api_does(org: Any) -> None:
    from tests.tasks.conftest import make_agent

    task = actions.create_task(org=org, agent=make_agent(org), message=text("x"))
    event = TaskEvent.objects.unscoped("test").filter(task_id=task.pk).order_by("seq").first()
    assert event is not None
    rest = TaskEventSerializer(event).data["created_at"]
    assert rest.endswith("Z")
    assert event.as_message()["created_at"] == rest
