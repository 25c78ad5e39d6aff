"""The demo agents' logic, written against the a2a-sdk server API exactly as a third-party agent would be."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from a2a.helpers import get_data_parts, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Part, Task, TaskState
from google.protobuf import json_format, struct_pb2

from apps.agents.demo.calculator import CalculationError, evaluate
from apps.agents.demo.summarizer import summarize

SLOW_DEFAULT_SECONDS = 5.0
SLOW_MAX_SECONDS = 600.0


def data_part(value: Any) -> Part:
    proto = struct_pb2.Value()
    json_format.ParseDict(value, proto)
    return Part(data=proto)


def first_data(context: RequestContext) -> dict[str, Any]:
    """The first data part of the user's message when it is an object (options such as {"seconds": 3})."""
    if context.message is None:
        return {}
    for item in get_data_parts(list(context.message.parts)):
        if isinstance(item, dict):
            return item
    return {}


class DemoExecutor(AgentExecutor):
    """Creates (or continues) the task, runs `work`, and turns a bad request into a failed task with a reason."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task: Task = context.current_task or new_task_from_user_message(context.message)  # type: ignore[arg-type]
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        try:
            await self.work(context, updater)
        except CalculationError as exc:
            await updater.failed(updater.new_agent_message([new_text_part(str(exc))]))

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        raise NotImplementedError

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.cancel(updater.new_agent_message([new_text_part("Canceled on request.")]))


class EchoExecutor(DemoExecutor):
    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        parts = [new_text_part(context.get_user_input())]
        if context.message is not None:
            parts += [data_part(item) for item in get_data_parts(list(context.message.parts))]
        await updater.add_artifact(parts, name="echo")
        await updater.complete()


class GreeterExecutor(DemoExecutor):
    """Asks for a name (input-required) and greets it in the follow-up: the demo of answering an agent."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        if context.current_task is None:  # a new task: ask, and wait for the caller's answer
            await updater.requires_input(updater.new_agent_message([new_text_part("Hello! What is your name?")]))
            return
        name = context.get_user_input().strip() or "stranger"
        await updater.add_artifact([new_text_part(f"Nice to meet you, {name}.")], name="greeting")
        await updater.complete()


class SummarizerExecutor(DemoExecutor):
    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        options = first_data(context)
        text = context.get_user_input()
        limit = options.get("sentences")
        summary = summarize(text, int(limit) if isinstance(limit, int | float) and limit > 0 else None)
        await updater.add_artifact([new_text_part(summary)], name="summary")
        await updater.complete()


class CalculatorExecutor(DemoExecutor):
    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        expression = str(first_data(context).get("expression") or context.get_user_input())
        result = evaluate(expression)
        await updater.add_artifact(
            [
                new_text_part(f"{expression.strip()} = {result}"),
                data_part({"expression": expression, "result": result}),
            ],
            name="result",
        )
        await updater.complete()


class SlowExecutor(DemoExecutor):
    """Reports progress every `interval` seconds for `seconds` seconds; a CancelTask stops it mid-way."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        options = first_data(context)
        match = re.search(r"\d+(?:\.\d+)?", context.get_user_input())
        seconds = float(options.get("seconds") or (match.group() if match else SLOW_DEFAULT_SECONDS))
        seconds = min(max(seconds, 0.0), SLOW_MAX_SECONDS)
        interval = min(max(float(options.get("interval") or 1.0), 0.05), 60.0)
        steps = max(1, round(seconds / interval))
        for step in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)
            note = f"step {step}/{steps}"
            await updater.update_status(
                TaskState.TASK_STATE_WORKING,
                message=updater.new_agent_message([new_text_part(note), data_part({"step": step, "of": steps})]),
            )
        await updater.add_artifact([new_text_part(f"Done after {seconds:g} seconds.")], name="result")
        await updater.complete()
