"""The built-in demo agents: real A2A agents served by Hermes' ASGI app, reached over HTTP with the SDK client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from apps.agents import actions
from apps.agents.client import AgentClient, AgentTarget, AgentTransportError, AgentUpdate, iterate_sync
from apps.agents.demo.app import FlakyGate
from apps.agents.demo.calculator import CalculationError, evaluate
from apps.agents.demo.specs import DEMO_AGENTS
from apps.agents.demo.summarizer import split_sentences, summarize
from apps.agents.models import Agent
from tests.hermes_server import LiveHermes


def run(target: AgentTarget, **message: Any) -> list[AgentUpdate]:
    return list(iterate_sync(lambda: AgentClient(target, poll_interval=0.05).run_once(**message)))


def target(demo_agents: LiveHermes, slug: str) -> AgentTarget:
    spec = next(s for s in DEMO_AGENTS if s.slug == slug)
    return AgentTarget(url=demo_agents.url(slug), streaming=spec.streaming)


def artifacts(updates: list[AgentUpdate]) -> list[AgentUpdate]:
    return [u for u in updates if u.kind == "artifact"]


@pytest.mark.django_db
@pytest.mark.parametrize("spec", DEMO_AGENTS, ids=lambda s: s.slug)
def test_every_demo_agent_registers_by_its_card(demo_agents: LiveHermes, org: Any, spec: Any) -> None:
    agent = actions.register_agent_by_url(org=org, url=demo_agents.url(spec.slug))
    assert agent.url == demo_agents.url(spec.slug)
    assert agent.card_url == demo_agents.card_url(spec.slug)
    assert agent.streaming is spec.streaming
    assert agent.skills and agent.protocol_version == "1.0"


def test_legacy_card_path_is_served_too(demo_agents: LiveHermes) -> None:
    card = httpx.get(f"{demo_agents.url('echo')}.well-known/agent.json").json()
    assert card["name"] == "Hermes Echo" and card["url"] == demo_agents.url("echo")  # v0.3 fields included


def test_echo_streams_text_and_data_back(demo_agents: LiveHermes) -> None:
    updates = run(target(demo_agents, "echo"), text="hello", data=[{"x": 1}])
    assert [u.state for u in updates if u.kind == "status"] == ["submitted", "working", "completed"]
    (echo,) = artifacts(updates)
    assert (echo.text, echo.data) == ("hello", [{"x": 1}])


def test_echo_speaks_v03_too(demo_agents: LiveHermes) -> None:
    legacy = AgentTarget(url=demo_agents.url("echo"), streaming=True, protocol_version="0.3.0")
    updates = run(legacy, text="old client")
    assert updates[-1].state == "completed" and artifacts(updates)[0].text == "old client"


TEXT = (
    "Hermes routes tasks to agents. Agents answer with artifacts. The weather was nice on Tuesday. "
    "Every task in Hermes has a timeline of events, and agents stream events into the timeline. "
    "Lunch was pasta."
)


def test_summarizer_is_deterministic_and_uses_send_then_get(demo_agents: LiveHermes) -> None:
    first = run(target(demo_agents, "summarizer"), text=TEXT)
    second = run(target(demo_agents, "summarizer"), text=TEXT, data=[{"sentences": 1}])
    assert first[-1].state == "completed"
    assert artifacts(first)[0].text == summarize(TEXT)
    assert artifacts(second)[0].text == summarize(TEXT, 1)
    assert "timeline" in summarize(TEXT, 1) and "pasta" not in summarize(TEXT)


def test_summarizer_unit() -> None:
    assert split_sentences("One. Two!  Three?") == ["One.", "Two!", "Three?"]
    assert summarize("") == "" and summarize("Only one sentence.") == "Only one sentence."
    assert summarize(TEXT) == summarize(TEXT)
    assert len(split_sentences(summarize(TEXT))) == 2  # a third of five sentences, rounded up


def test_calculator(demo_agents: LiveHermes) -> None:
    updates = run(target(demo_agents, "calculator"), text="2 * (3 + 4) ^ 2")
    (result,) = artifacts(updates)
    assert result.text == "2 * (3 + 4) ^ 2 = 98" and result.data == [{"expression": "2 * (3 + 4) ^ 2", "result": 98}]
    # JSON numbers come back as the agent wrote them, though protobuf carried them as doubles.
    assert type(result.data[0]["result"]) is int and result.artifact["parts"][1]["data"]["result"] == 98
    (half,) = artifacts(run(target(demo_agents, "calculator"), text="7 / 2"))
    assert half.data[0]["result"] == 3.5
    failed = run(target(demo_agents, "calculator"), text="__import__('os').system('true')")
    assert failed[-1].state == "failed" and "Unsupported element" in failed[-1].text


@pytest.mark.parametrize(
    ("expression", "value"),
    [("1 + 2 * 3", 7), ("7 / 2", 3.5), ("7 // 2", 3), ("-3 % 2", 1), ("sqrt(16) + abs(-1)", 5), ("max(1, 4, 2)", 4)],
)
def test_calculator_evaluates(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    ["", "x", "1 / 0", "9 ^ 9 ^ 9", "(-1) ^ 0.5", "open('f')", "(1).real", "[1, 2]", "True + 1", "1 +", "a" * 501],
)
def test_calculator_refuses(expression: str) -> None:
    with pytest.raises(CalculationError):
        evaluate(expression)


def test_slow_streams_progress(demo_agents: LiveHermes) -> None:
    updates = run(target(demo_agents, "slow"), data=[{"seconds": 0.3, "interval": 0.1}])
    progress = [u.text for u in updates if u.kind == "status" and u.text.startswith("step")]
    assert progress == ["step 1/3", "step 2/3", "step 3/3"]
    assert updates[-1].state == "completed"


def test_greeter_asks_then_greets_the_answer(demo_agents: LiveHermes) -> None:
    asked = run(target(demo_agents, "greeter"), text="hi")
    assert asked[-1].state == "input-required" and "What is your name?" in asked[-1].text
    last = asked[-1]
    answered = run(target(demo_agents, "greeter"), text="Ada", task_id=last.remote_task_id, context_id=last.context_id)
    assert [u.text for u in artifacts(answered)] == ["Nice to meet you, Ada."]
    assert answered[-1].state == "completed" and answered[-1].remote_task_id == last.remote_task_id


def test_slow_honors_cancel_mid_stream(demo_agents: LiveHermes) -> None:
    async def go() -> tuple[list[AgentUpdate], AgentUpdate]:
        seen: list[AgentUpdate] = []
        canceled: AgentUpdate | None = None
        async with AgentClient(target(demo_agents, "slow")) as client:
            async for update in client.stream(text="work", data=[{"seconds": 30, "interval": 0.1}]):
                seen.append(update)
                if update.text == "step 2/300" and canceled is None:
                    canceled = await client.cancel(update.remote_task_id)
        assert canceled is not None
        return seen, canceled

    seen, canceled = asyncio.run(asyncio.wait_for(go(), timeout=20))
    assert canceled.state == "canceled"
    assert seen[-1].state == "canceled" and seen[-1].final
    assert not any(u.text == "step 10/300" for u in seen)


def test_flaky_fails_the_first_n_attempts_of_a_message(demo_agents: LiveHermes) -> None:
    flaky = target(demo_agents, "flaky")
    for _attempt in range(2):
        with pytest.raises(AgentTransportError) as exc_info:
            run(flaky, text="hi", message_id="m-fixed", metadata={"flakyFailures": 2})
        assert exc_info.value.status_code == 503
    updates = run(flaky, text="hi", message_id="m-fixed", metadata={"flakyFailures": 2})
    assert updates[-1].state == "completed" and artifacts(updates)[0].text == "hi"


def test_flaky_rate_extremes_over_http(demo_agents: LiveHermes, settings: Any) -> None:
    settings.HERMES_DEMO_FLAKY_FAILURE_RATE = 1.0
    with pytest.raises(AgentTransportError):
        run(target(demo_agents, "flaky"), text="a")
    settings.HERMES_DEMO_FLAKY_FAILURE_RATE = 0.0
    assert run(target(demo_agents, "flaky"), text="b")[-1].state == "completed"


def test_flaky_is_deterministic_when_seeded(settings: Any) -> None:
    settings.HERMES_DEMO_FLAKY_SEED = "seed-1"
    settings.HERMES_DEMO_FLAKY_FAILURE_RATE = 0.5

    def decisions() -> list[bool]:
        gate = FlakyGate(app=None)
        return [gate.should_fail(f"m{i % 50}", {}) for i in range(200)]

    first, second = decisions(), decisions()
    assert first == second
    assert 60 < sum(first) < 140  # about half
    settings.HERMES_DEMO_FLAKY_SEED = "seed-2"
    assert decisions() != first


@pytest.mark.django_db
def test_assign_demo_agents_is_idempotent_and_the_agents_work(demo_agents: LiveHermes, org: Any, alice: Any) -> None:
    first = actions.assign_demo_agents(org=org, by=alice)
    assert sorted(a.demo_key for a in first.created) == sorted(s.slug for s in DEMO_AGENTS)
    again = actions.assign_demo_agents(org=org, by=alice)
    assert again.created == [] and len(again.existing) == len(DEMO_AGENTS)
    assert Agent.objects.for_org(org).count() == len(DEMO_AGENTS)
    echo = Agent.objects.for_org(org).get(demo_key="echo")
    assert echo.is_demo and echo.slug == "demo-echo" and echo.url == demo_agents.url("echo")
    assert echo.card_url == demo_agents.card_url("echo") and echo.streaming
    assert echo.card == httpx.get(echo.card_url).json()  # stored card == served card
    updates = run(AgentTarget.from_agent(echo), text="assigned")
    assert artifacts(updates)[0].text == "assigned"


def test_demo_agents_can_be_switched_off(demo_agents: LiveHermes, settings: Any) -> None:
    settings.HERMES_FEATURES = {**settings.HERMES_FEATURES, "demo_agents": False}
    response = httpx.get(demo_agents.card_url("echo"), headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert "Hermes Echo" not in response.text  # Django answered, not the agent


def test_resume_picks_up_a_running_task(demo_agents: LiveHermes) -> None:
    """A worker that lost the stream (it died) resumes from the snapshot and follows the task to its end."""

    async def go() -> tuple[str, list[AgentUpdate]]:
        async with AgentClient(target(demo_agents, "slow")) as client:
            async for update in client.stream(data=[{"seconds": 0.8, "interval": 0.1}]):
                if update.text == "step 2/8":
                    remote_task_id = update.remote_task_id
                    break  # drop the stream, as a killed worker would
        async with AgentClient(target(demo_agents, "slow")) as client:
            return remote_task_id, [u async for u in client.resume(remote_task_id)]

    remote_task_id, resumed = asyncio.run(asyncio.wait_for(go(), timeout=20))
    assert resumed[0].state == "working" and resumed[0].remote_task_id == remote_task_id
    assert resumed[-1].state == "completed"
    assert [u.text for u in resumed if u.kind == "artifact"] == ["Done after 0.8 seconds."]


def test_resume_of_a_finished_task_and_by_polling(demo_agents: LiveHermes) -> None:
    async def go() -> tuple[list[AgentUpdate], list[AgentUpdate]]:
        async with AgentClient(target(demo_agents, "echo")) as client:
            done = [u async for u in client.run(text="over")]
            again = [u async for u in client.resume(done[-1].remote_task_id)]
        async with AgentClient(target(demo_agents, "summarizer"), poll_interval=0.05) as client:
            first = await client.send(return_immediately=True, text="One. Two. Three.")
            polled = [u async for u in client.resume(first[-1].remote_task_id)]
        return again, polled

    again, polled = asyncio.run(asyncio.wait_for(go(), timeout=20))
    assert [u.kind for u in again] == ["artifact", "status"] and again[-1].state == "completed"
    assert polled[-1].state == "completed"


# Options each demo agent reads, and what it says of a bad one: the option, what it accepts, what it got. The slow
# agent answered "could not convert string to float: 'abc'" and "cannot convert float NaN to integer".
BAD_OPTIONS = [
    ("slow", {"data": [{"seconds": "abc"}]}, '"seconds" must be a number of seconds from 0 to 600; got "abc".'),
    ("slow", {"data": [{"seconds": "nan"}]}, '"seconds" must be a number of seconds from 0 to 600; got "nan".'),
    ("slow", {"data": [{"seconds": 601}]}, '"seconds" must be a number of seconds from 0 to 600; got 601.'),
    ("slow", {"data": [{"seconds": True}]}, '"seconds" must be a number of seconds from 0 to 600; got true.'),
    (
        "slow",
        {"data": [{"seconds": 1, "interval": 0}]},
        '"interval" must be a number of seconds from 0.05 to 60; got 0.',
    ),
    (
        "slow",
        {"text": "wait 1000 seconds"},
        '"seconds" (the number in the text) must be a number of seconds from 0 to 600; got "1000".',
    ),
    (
        "summarizer",
        {"text": "A. B.", "data": [{"sentences": 2.5}]},
        '"sentences" must be a whole number from 1 to 1000; got 2.5.',
    ),
    (
        "summarizer",
        {"text": "A. B.", "data": [{"sentences": "all"}]},
        '"sentences" must be a whole number from 1 to 1000; got "all".',
    ),
    (
        "summarizer",
        {"text": "A. B.", "data": [{"sentences": 0}]},
        '"sentences" must be a whole number from 1 to 1000; got 0.',
    ),
    ("calculator", {"data": [{"expression": 5}]}, '"expression" must be text, such as "2 * (3 + 4)"; got 5.'),
    (
        "flaky",
        {"text": "hi", "metadata": {"flakyFailures": "x"}},
        '"flakyFailures" (message metadata) must be a whole number from 0 to 100; got "x".',
    ),
    (
        "flaky",
        {"text": "hi", "metadata": {"flakyFailures": -1}},
        '"flakyFailures" (message metadata) must be a whole number from 0 to 100; got -1.',
    ),
    (
        "flaky",
        {"text": "hi", "metadata": {"flakyFailureRate": 2}},
        '"flakyFailureRate" (message metadata) must be a number from 0 to 1; got 2.',
    ),
]


@pytest.mark.parametrize(("slug", "message", "said"), BAD_OPTIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_option_fails_the_task_naming_the_option_and_its_range(
    demo_agents: LiveHermes, settings: Any, slug: str, message: dict[str, Any], said: str
) -> None:
    settings.HERMES_DEMO_FLAKY_FAILURE_RATE = 0.0  # the flaky gate lets it through; the agent refuses it
    updates = run(target(demo_agents, slug), **message)
    assert updates[-1].state == "failed"
    assert updates[-1].text == said


def test_good_options_in_range_are_taken_as_numbers_or_numeric_strings(demo_agents: LiveHermes) -> None:
    done = run(target(demo_agents, "slow"), data=[{"seconds": "0.2", "interval": "0.1"}])
    assert done[-1].state == "completed" and artifacts(done)[0].text == "Done after 0.2 seconds."
    at_once = run(target(demo_agents, "slow"), data=[{"seconds": 0}])  # 0 was taken as "not given": 5 s
    assert at_once[-1].state == "completed" and artifacts(at_once)[0].text == "Done after 0 seconds."
    (summary,) = artifacts(run(target(demo_agents, "summarizer"), text=TEXT, data=[{"sentences": "1"}]))
    assert summary.text == summarize(TEXT, 1)


def test_the_flaky_gate_leaves_a_bad_option_to_the_agent(settings: Any) -> None:
    settings.HERMES_DEMO_FLAKY_FAILURE_RATE = 1.0
    gate = FlakyGate(app=None)
    assert gate.should_fail("m1", {}) and gate.should_fail("m2", {"flakyFailures": 1})
    assert not gate.should_fail("m2", {"flakyFailures": 1})  # its second attempt
    for bad in ({"flakyFailures": float("nan")}, {"flakyFailures": float("inf")}, {"flakyFailureRate": "most"}):
        assert not gate.should_fail("m3", bad), bad  # an error in the gate was an HTTP 500 saying nothing
