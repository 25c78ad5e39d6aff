"""What a task says when its agent fails it without a word, or when its agent's URL redirects: run by a real
Celery worker against the a2a-sdk test agents over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents.actions import register_agent_by_url, register_agent_manually
from apps.tasks import actions
from tests.tasks.conftest import reload_task, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_to_the_end(agent: Any, text: str) -> Any:
    task = actions.create_task(org=agent.organization, agent=agent, message={"parts": [{"kind": "text", "text": text}]})
    return wait_for(lambda: (t := reload_task(task)).is_terminal and t)


def test_a_polled_agent_whose_executor_raised_fails_the_task_with_a_reason(
    task_worker: Any, agents_base: str, org: Any
) -> None:
    """The streaming agent's task says "The agent returned an error: executor exploded"; the polled one's ended
    `failed` with an empty reason (its status has no message)."""
    agent = register_agent_by_url(org=org, url=f"{agents_base}/plain/")
    task = run_to_the_end(agent, "boom")
    assert task.state == "failed" and task.attempts == 1
    reason = "The agent reported the task failed without saying why."
    assert task.last_error == reason
    last = task.events.order_by("-seq").first()
    assert last.data == {"from": "working", "to": "failed"}  # the agent said nothing: no words are put in its mouth


def test_an_agent_url_that_redirects_says_so(task_worker: Any, agents_base: str, org: Any) -> None:
    """Registered by hand without the trailing slash its server wants: every call is answered 307."""
    agent = register_agent_manually(org=org, name="No Slash", url=f"{agents_base}/stream", streaming=True)
    task = run_to_the_end(agent, "hi")
    assert task.state == "failed" and task.attempts == 1  # not retried: it will redirect again
    assert task.last_error == (
        f"The agent redirected to {agents_base}/stream/ (HTTP 307); Hermes does not follow redirects for agent "
        "calls: register the agent with its final URL."
    )
