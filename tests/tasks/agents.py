"""Agents for the task-execution tests, written with the official a2a-sdk server only.

`third_party` (tests/agents/sdk_agent.py) echoes, fails, asks for input; `slow` streams a progress note every
STEP seconds for the number of steps in its input (default 40) and honors CancelTask.
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


class SlowExecutor(AgentExecutor):
    started: list[str] = []
    canceled: list[str] = []

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
            await asyncio.sleep(STEP)
            message = updater.new_agent_message([new_text_part(f"step {step}/{steps}")])
            await updater.update_status(TaskState.TASK_STATE_WORKING, message=message)
        await updater.add_artifact([new_text_part(f"done after {steps} steps")], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            SlowExecutor.canceled.append(task.id)
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def _slow_app(base: str) -> Starlette:
    card = AgentCard(
        name="Slow",
        description="Streams progress, honors cancel",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=base, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="slow", name="Slow", description="Takes its time", tags=["test"])],
    )
    handler = DefaultRequestHandler(agent_executor=SlowExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    return Starlette(routes=[*create_jsonrpc_routes(handler, "/"), *create_agent_card_routes(card)])


def build(base: str) -> Any:
    return Starlette(routes=[Mount("/slow", _slow_app(f"{base}/slow/")), Mount("/", third_party_app(base))])
