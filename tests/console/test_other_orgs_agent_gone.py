"""Another org's agent that this org's task went to, once its owner deleted it or made it private: the console says
"no longer available" either way, as the API does (`unavailable`), and never whether it was deleted. The org's own
retired agent is still "(retired)" (tests/console/test_console_qa_refusals.py)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import actions as agent_actions
from apps.agents.models import Visibility
from apps.tasks import actions as task_actions
from apps.tasks.actions import Observation
from tests.console.conftest import HX, main_html
from tests.factories import access_for

pytestmark = pytest.mark.django_db

TEXT = {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}


@pytest.mark.parametrize("gone", ["deleted", "made_private"])
def test_another_orgs_agent_is_no_longer_available_whatever_its_owner_did(
    as_user: Any, alice: Any, charlie: Any, org: Any, other_org: Any, gone: str
) -> None:
    greeter = agent_actions.register_agent_manually(
        org=other_org, name="Greeter", url="https://agent.example.com/rpc", visibility=Visibility.PUBLIC
    )
    task = task_actions.create_task(org=org, agent=greeter, message=TEXT, access=access_for(alice, org))
    task_actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    if gone == "deleted":
        assert agent_actions.delete_agent(greeter, by=charlie) is False  # it has acme's task: retired
    else:
        agent_actions.set_visibility(greeter, Visibility.PRIVATE, by=charlie)
    client = as_user(alice)
    for page in (main_html(client.get(f"/tasks/{task.pk}/")), client.get(f"/tasks/{task.pk}/", **HX).content.decode()):
        about = page.split('id="task-about"', 1)[1]
        assert "<dd>Greeter <span" in about and "(no longer available)</span>" in about
        assert "retired" not in page and "deleted" not in page
        assert f"/agents/{greeter.pk}/" not in page  # its page is a 404 for acme either way
    # The reply card is the same whichever it was: no box that cannot work, and no word of which it was.
    full = main_html(client.get(f"/tasks/{task.pk}/"))
    assert "data-reply-unavailable" in full and "data-reply-retired" not in full and 'name="text"' not in full
    listed = main_html(client.get("/tasks/"))
    select = listed.split('name="agent"', 1)[1].split("</select>", 1)[0]
    assert f'<option value="{greeter.pk}">Greeter ({greeter.slug}) (no longer available)</option>' in select
    assert "(retired)" not in select
