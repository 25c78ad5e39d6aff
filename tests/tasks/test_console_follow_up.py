"""The console's reply box refuses a follow-up to an agent the org may no longer use, as the API does (409)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.agents import actions as agent_actions
from apps.agents.models import Visibility
from apps.core.models import AuditEvent
from apps.tasks import actions
from apps.tasks.actions import Observation
from tests.tasks.conftest import MESSAGE, make_agent, reload_task

pytestmark = pytest.mark.django_db


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("gone", ["made_private", "own_deleted"])
def test_the_reply_box_refuses_an_agent_no_longer_usable(
    alice: Any, charlie: Any, org: Any, other_org: Any, gone: str, django_capture_on_commit_callbacks: Any
) -> None:
    owner, owner_org = (alice, org) if gone == "own_deleted" else (charlie, other_org)
    agent = make_agent(owner_org, "helper", visibility=Visibility.PUBLIC)
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    task = actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    if gone == "made_private":
        agent_actions.set_visibility(agent, Visibility.PRIVATE, by=owner)
    else:
        assert agent_actions.delete_agent(agent, by=owner) is False  # it has a task: retired
    with django_capture_on_commit_callbacks() as callbacks:
        response = signed_in(alice).post(f"/tasks/{task.pk}/reply/", {"text": "my answer"})
    assert response.status_code == 409
    html = response.content.decode()
    said = {
        "made_private": "no longer available to this organization: its owner made it private or deleted it.",
        "own_deleted": "The agent was deleted (retired)",
    }[gone]
    assert '<ul class="errorlist nonfield"><li>' in html and said in html  # above the reply box
    assert "my answer</textarea>" in html  # what was typed is kept
    assert callbacks == []
    after = reload_task(task)
    assert (after.state, after.last_seq, after.pending_message) == ("input-required", task.last_seq, None)
    assert not AuditEvent.objects.filter(action="task.continued", target_id=str(task.pk)).exists()
    # Opened again, the page offers no reply box that cannot work; of another org's agent it says only that it is
    # no longer available, not whether its owner deleted it or made it private.
    page = signed_in(alice).get(f"/tasks/{task.pk}/").content.decode()
    note = "data-reply-retired" if gone == "own_deleted" else "data-reply-unavailable"
    assert note in page and 'name="text"' not in page
