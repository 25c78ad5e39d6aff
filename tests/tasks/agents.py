"""Agents for the task-execution tests, written with the official a2a-sdk server only.

`third_party` (tests/agents/sdk_agent.py) echoes, fails, asks for input; `slow` streams a progress note every
STEP seconds for the number of steps in its input (default 40) and honors CancelTask; `sleepy` is `slow` with
SLEEPY_STEP seconds between notes (an agent that says nothing for a while); `chunks` (card without
streaming) and `chunks-stream` (with) write one artifact in CHUNKS pieces, CHUNK_GAP seconds apart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.agents.sdk_agent import build_app as third_party_app

STEP = 0.1
SLEEPY_STEP = 5.0


async def started(context: RequestContext, event_queue: EventQueue) -> TaskUpdater:
    """The request's task (made and announced on its first message) moved to working: how every agent here begins."""
    task = context.current_task or new_task_from_user_message(context.message)  # type: ignore[arg-type]
    if context.current_task is None:
        await event_queue.enqueue_event(task)
    updater = TaskUpdater(event_queue, task.id, task.context_id)
    await updater.start_work()
    return updater


class SlowExecutor(AgentExecutor):
    started: list[str] = []
    canceled: list[str] = []

    def __init__(self, step: float = STEP) -> None:
        self.step = step

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        steps = int(text) if text.isdigit() else 40
        task = context.current_task or new_task_from_user_message(context.message)  # type: ignore[arg-type]
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        SlowExecutor.started.append(task.id)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        for step in range(1, steps + 1):
            await asyncio.sleep(self.step)
            message = updater.new_agent_message([new_text_part(f"step {step}/{steps}")])
            await updater.update_status(TaskState.TASK_STATE_WORKING, message=message)
        await updater.add_artifact([new_text_part(f"done after {steps} steps")], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            SlowExecutor.canceled.append(task.id)
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


CHUNKS = 5
CHUNK_GAP = 0.2


class ChunkedExecutor(AgentExecutor):
    """Writes one artifact in CHUNKS `add_artifact` calls to the same artifact_id (the first creates it, the rest
    append, the last says so), as an agent that produces its result piece by piece does."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        for number in range(1, CHUNKS + 1):
            await updater.add_artifact(
                [new_text_part(f"chunk {number}")],
                artifact_id="report",
                name="report",
                append=number > 1,
                last_chunk=number == CHUNKS,
            )
            await asyncio.sleep(CHUNK_GAP)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


SIGN_IN_WAIT = 1.0


class OutOfBandAuthExecutor(AgentExecutor):
    """Asks for sign-in (auth-required) and, without any message from its caller, goes on SIGN_IN_WAIT seconds
    later as if the person had signed in elsewhere: the SDK's out-of-band auth model (`execute` does not return)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await started(context, event_queue)
        await updater.requires_auth(updater.new_agent_message([new_text_part("sign in at https://idp.example")]))
        await asyncio.sleep(SIGN_IN_WAIT)
        await updater.add_artifact([new_text_part("result after sign-in")], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class SilentExecutor(AgentExecutor):
    """Says nothing at all for a minute (not even the task it made), then completes."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await asyncio.sleep(60)
        task = new_task_from_user_message(context.message)  # type: ignore[arg-type]
        await event_queue.enqueue_event(task)
        await TaskUpdater(event_queue, task.id, task.context_id).complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def card_at(url: str, name: str, *, streaming: bool) -> AgentCard:
    """The card of a test agent served at `url` (JSON-RPC, protocol 1.0)."""
    return AgentCard(
        name=name,
        description=f"{name}, a test agent",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=name.lower(), name=name, description=name, tags=["test"])],
    )


def _app(base: str, name: str, executor: AgentExecutor, *, streaming: bool) -> Starlette:
    card = card_at(base, name, streaming=streaming)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    return Starlette(routes=[*create_jsonrpc_routes(handler, "/"), *create_agent_card_routes(card)])


def build(base: str) -> Any:
    return Starlette(
        routes=[
            Mount("/slow", _app(f"{base}/slow/", "Slow", SlowExecutor(), streaming=True)),
            Mount("/sleepy", _app(f"{base}/sleepy/", "Sleepy", SlowExecutor(SLEEPY_STEP), streaming=True)),
            Mount("/chunks-stream", _app(f"{base}/chunks-stream/", "Chunks", ChunkedExecutor(), streaming=True)),
            Mount("/chunks", _app(f"{base}/chunks/", "Chunks", ChunkedExecutor(), streaming=False)),
            Mount("/oob-stream", _app(f"{base}/oob-stream/", "OOB", OutOfBandAuthExecutor(), streaming=True)),
            Mount("/oob", _app(f"{base}/oob/", "OOB", OutOfBandAuthExecutor(), streaming=False)),
            Mount("/silent", _app(f"{base}/silent/", "Silent", SilentExecutor(), streaming=True)),
            Mount("/", third_party_app(base)),
        ]
    )
