"""QA findings on the server side of the console: the error toast's text beyond Latin-1 (apps.core.console), the
dead-letter queue's buttons asking only with a selection, a retired agent on a task's page, and the task list's
agent filter over every agent the org's tasks went to. Their browser halves are in
tests/e2e/test_console_qa_refusals.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from apps.agents import actions as agent_actions
from apps.core.console import error_message_header
from apps.orgs.models import Membership
from apps.tasks import actions as task_actions
from apps.tasks.models import Task
from tests.console.conftest import HX, main_html
from tests.console.test_federation_pages import berlin, dead_letter  # noqa: F401 (berlin: a fixture)
from tests.factories import OrganizationFactory, access_for

pytestmark = pytest.mark.django_db

TEXT = {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}


def send(org: Any, user: Any, agent: Any) -> Task:
    return task_actions.create_task(org=org, agent=agent, message=TEXT, access=access_for(user, org))


# The error header


@pytest.mark.parametrize(
    "message",
    [
        "Nothing was done: you have switched to Beta 東京 Labs since (in another tab).",
        "“Quoted” — and cut short…",
        "100% used, a literal %41 and a café",
    ],
)
def test_the_error_header_carries_any_text(message: str) -> None:
    header = error_message_header(message)
    header.encode("latin-1")  # a valid header value
    assert "?" not in header and unquote(header) == message  # "Beta ?? Labs", "?Quoted?", "cut short?"


def test_the_error_header_sends_plain_ascii_as_it_is() -> None:
    message = "Your role (Member) may not change roles: ask an owner [org:roles] & retry; 'acme' #2 +1 = ~done!"
    assert error_message_header(message) == message
    assert error_message_header("a\n  multi-line\tmessage  ") == "a multi-line message"
    assert error_message_header("x" * 400) == "x" * 300


def test_a_refusal_naming_an_org_beyond_latin_1_reaches_the_toast_whole(as_user: Any, alice: Any, org: Any) -> None:
    beta = OrganizationFactory(slug="beta", name="Beta 東京 Labs")
    Membership.objects.create(organization=beta, user=alice, role="owner")
    client = as_user(alice)
    assert client.post("/orgs/switch/", {"org": "beta"}).status_code == 302
    stale = client.get("/tasks/?status=working", HTTP_X_HERMES_CONSOLE_ORG="acme", **HX)
    assert stale.status_code == 409
    assert "switched to Beta 東京 Labs since" in unquote(stale["X-Hermes-Error"])


# The dead-letter queue


def test_the_dlq_buttons_ask_only_while_a_message_is_ticked(as_user: Any, bob: Any, org: Any, berlin: Any) -> None:  # noqa: F811
    dead_letter(org, berlin)
    page = main_html(as_user(bob).get("/federation/dlq/"))
    for question in ("Requeue the selected messages for delivery?", "Discard the selected messages for good?"):
        button = page.split(f'data-confirm-click="{question}', 1)[1].split(">", 1)[0]
        assert 'data-confirm-if-checked="ids"' in button
    assert 'type="checkbox" name="ids"' in page
    # Unasked with nothing ticked, the answer still says what to do.
    empty = as_user(bob).post("/federation/dlq/apply/", {"operation": "requeue"}, **HX)
    assert empty.status_code == 200 and "Select at least one message first." in empty.content.decode()


# A retired agent on a task's page


def test_a_task_of_a_retired_agent_names_it_without_a_dead_link(as_user: Any, alice: Any, org: Any) -> None:
    echo = agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")
    task = send(org, alice, echo)
    client = as_user(alice)
    assert f'href="/agents/{echo.pk}/"' in main_html(client.get(f"/tasks/{task.pk}/"))
    assert agent_actions.delete_agent(echo) is False  # it had a task: retired
    assert client.get(f"/agents/{echo.pk}/").status_code == 404
    for page in (main_html(client.get(f"/tasks/{task.pk}/")), client.get(f"/tasks/{task.pk}/", **HX).content.decode()):
        about = page.split('id="task-about"', 1)[1]
        assert f"/agents/{echo.pk}/" not in page
        assert "<dd>Echo <span" in about and "(retired)</span>" in about
        assert "data-agent-online" not in about  # no online badge for an agent nobody can reach any more


# The task list's agent filter


@pytest.fixture
def agents_used(org: Any, other_org: Any, alice: Any) -> dict[str, Any]:
    """acme's own agent, a public agent of globex acme sent a task to, one acme never used, globex's private one,
    and an agent of acme's retired after its task."""
    agents = {
        "own": agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc"),
        "public": agent_actions.register_agent_manually(
            org=other_org, name="Echo", url="https://agent.example.com/rpc", visibility="public"
        ),
        "unused": agent_actions.register_agent_manually(
            org=other_org, name="Unused", url="https://agent.example.com/rpc", visibility="public"
        ),
        "private": agent_actions.register_agent_manually(
            org=other_org, name="Hidden", url="https://agent.example.com/rpc"
        ),
        "retired": agent_actions.register_agent_manually(org=org, name="Old", url="https://agent.example.com/rpc"),
    }
    for key in ("own", "public", "retired"):
        send(org, alice, agents[key])
    agent_actions.delete_agent(agents["retired"])
    return agents


def test_the_agent_filter_offers_every_agent_the_org_sent_tasks_to(
    as_user: Any, alice: Any, org: Any, agents_used: dict[str, Any]
) -> None:
    client = as_user(alice)
    page = main_html(client.get("/tasks/"))
    select = page.split('name="agent"', 1)[1].split("</select>", 1)[0]
    for key in ("own", "public", "retired"):
        assert f'value="{agents_used[key].pk}"' in select
    for key in ("unused", "private"):  # never used by acme: not leaked
        assert f'value="{agents_used[key].pk}"' not in select
    # Grouped by owning org, acme's first: both are "Echo (echo)".
    assert select.index('<optgroup label="Acme">') < select.index('<optgroup label="Globex">')
    assert (
        f'<option value="{agents_used["retired"].pk}">Old ({agents_used["retired"].slug}) (retired)</option>' in select
    )
    # Chosen (also by URL), it lists that agent's task, as a filter on an own agent does.
    for key in ("public", "retired", "own"):
        agent = agents_used[key]
        listed = client.get(f"/tasks/?agent={agent.pk}", **HX)
        html = listed.content.decode()
        assert listed.status_code == 200 and "Select a valid choice" not in html
        assert f'data-task-row="{Task.objects.for_org(org).get(agent=agent).pk}"' in html
        assert html.count("data-task-row=") == 1
    # An agent acme never used is still "not a valid choice", and lists nothing.
    unused = main_html(client.get(f"/tasks/?agent={agents_used['unused'].pk}"))
    assert "Select a valid choice" in unused and "data-task-row=" not in unused


def test_an_own_agent_is_offered_before_its_first_task(as_user: Any, bob: Any, org: Any) -> None:
    echo = agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")
    select = main_html(as_user(bob).get("/tasks/")).split('name="agent"', 1)[1].split("</select>", 1)[0]
    assert f'<option value="{echo.pk}">Echo ({echo.slug})</option>' in select


def test_the_agent_filter_of_another_org_never_lists_acmes_agents(
    as_user: Any, charlie: Any, agents_used: dict[str, Any]
) -> None:
    select = main_html(as_user(charlie).get("/tasks/")).split('name="agent"', 1)[1].split("</select>", 1)[0]
    # globex's own agents (it used none), never the agents acme's tasks went to.
    for key in ("public", "unused", "private"):
        assert f'value="{agents_used[key].pk}"' in select
    for key in ("own", "retired"):
        assert f'value="{agents_used[key].pk}"' not in select
