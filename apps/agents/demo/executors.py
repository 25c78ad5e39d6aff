"""The demo agents' logic, written against the a2a-sdk server API exactly as a third-party agent would be."""

from __future__ import annotations

import asyncio
import json
import math
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
SLOW_DEFAULT_INTERVAL = 1.0
SLOW_MIN_INTERVAL, SLOW_MAX_INTERVAL = 0.05, 60.0
SUMMARY_MAX_SENTENCES = 1000
# More than Hermes ever retries a message (HERMES_TASK_MAX_ATTEMPTS), so any useful count fits.
FLAKY_MAX_FAILURES = 100


class BadOption(ValueError):
    """An option the agent cannot work with: the task fails with this message, which names the option and what
    it accepts (a raw "could not convert string to float: 'abc'" named neither)."""


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON integer arrives as a float (protobuf Struct): say 601, as it was sent
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def number_option(
    options: dict[str, Any],
    name: str,
    *,
    minimum: float,
    maximum: float,
    whole: bool = False,
    of: str = "",
    where: str = "",
) -> float | None:
    """`options[name]` as a number within [minimum, maximum], or None when it is not given (or null).

    A JSON number or a string holding one (`"3"`) is taken; anything else — text, true/false, NaN, infinity, a
    fraction where a whole number is wanted, or a value out of range — is a BadOption saying what is accepted.
    (A data part travels as a protobuf Struct, so an integer arrives as a float: 3.0 is whole.)
    """
    value = options.get(name)
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if (
        number is None
        or not math.isfinite(number)
        or not minimum <= number <= maximum
        or (whole and not number.is_integer())
    ):
        kind = "a whole number" if whole else "a number"
        raise BadOption(f'"{name}"{where} must be {kind}{of} from {minimum:g} to {maximum:g}; got {_shown(value)}.')
    return number


def request_metadata(context: RequestContext) -> dict[str, Any]:
    """The request's metadata with the message's over it (as the flaky gate reads them)."""
    message = context.message
    on_message = json_format.MessageToDict(message.metadata) if message is not None else {}
    return {**context.metadata, **on_message}


def flaky_options(metadata: dict[str, Any]) -> tuple[int | None, float | None]:
    """The flaky agent's options in message metadata: `flakyFailures` (fail exactly the first n attempts) and
    `flakyFailureRate` (the share of attempts to fail); None for one not given."""
    where = " (message metadata)"
    failures = number_option(metadata, "flakyFailures", minimum=0, maximum=FLAKY_MAX_FAILURES, whole=True, where=where)
    rate = number_option(metadata, "flakyFailureRate", minimum=0, maximum=1, where=where)
    return (None if failures is None else int(failures)), rate


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
        except (CalculationError, BadOption) as exc:
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


class FlakyExecutor(EchoExecutor):
    """The echo behind the flaky gate (apps.agents.demo.app.FlakyGate). The gate lets a message with a bad
    option through, unfailed: here the task fails saying which option is wrong."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        flaky_options(request_metadata(context))
        await super().work(context, updater)


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
        sentences = number_option(
            first_data(context), "sentences", minimum=1, maximum=SUMMARY_MAX_SENTENCES, whole=True
        )
        summary = summarize(context.get_user_input(), None if sentences is None else int(sentences))
        await updater.add_artifact([new_text_part(summary)], name="summary")
        await updater.complete()


class CalculatorExecutor(DemoExecutor):
    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        given = first_data(context).get("expression")
        if given is not None and not isinstance(given, str):
            raise BadOption(f'"expression" must be text, such as "2 * (3 + 4)"; got {_shown(given)}.')
        expression = given or context.get_user_input()
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
        limits: dict[str, Any] = {"minimum": 0.0, "maximum": SLOW_MAX_SECONDS, "of": " of seconds"}
        seconds = number_option(options, "seconds", **limits)
        if seconds is None:
            # The first number in the text, held to the same range (it was clamped: "wait 1000" waited 600).
            match = re.search(r"\d+(?:\.\d+)?", context.get_user_input())
            in_text = {"seconds": match.group()} if match else {}
            seconds = number_option(in_text, "seconds", **limits, where=" (the number in the text)")
        seconds = SLOW_DEFAULT_SECONDS if seconds is None else seconds
        interval = number_option(
            options, "interval", minimum=SLOW_MIN_INTERVAL, maximum=SLOW_MAX_INTERVAL, of=" of seconds"
        )
        interval = SLOW_DEFAULT_INTERVAL if interval is None else interval
        steps = max(1, round(seconds / interval))
        for step in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)
            note = f"step {step}/{steps}"
            await updater.update_status(
                TaskState.TASK_STATE_WORKING,
                message=updater.new_agent_message([new_text_part(note), data_part({"step": step, "of": steps})]),
            )
        unit = "second" if seconds == 1 else "seconds"
        await updater.add_artifact([new_text_part(f"Done after {seconds:g} {unit}.")], name="result")
        await updater.complete()
