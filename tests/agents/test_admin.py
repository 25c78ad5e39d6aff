from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.agents import actions
from apps.agents.models import Agent, Visibility
from apps.core.models import AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(settings: Any) -> Client:
    settings.HERMES_SSRF_ALLOWLIST = []
    staff = UserFactory(email="staff@hermes.test", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def agents(org: Any, other_org: Any) -> list[Agent]:
    return [
        actions.register_agent_manually(
            org=org, name="Alpha", url="https://alpha.example.com/", skills=[{"id": "s", "name": "Sum"}]
        ),
        actions.register_agent_manually(org=other_org, name="Beta", url="https://beta.example.com/"),
    ]


def test_staff_see_every_org_and_the_card(staff_client: Client, agents: list[Agent]) -> None:
    response = staff_client.get("/admin/agents/agent/")
    assert response.status_code == 200
    assert b"Alpha" in response.content and b"Beta" in response.content
    searched = staff_client.get("/admin/agents/agent/?q=beta.example").content
    assert b"Beta" in searched and b"Alpha" not in searched
    detail = staff_client.get(f"/admin/agents/agent/{agents[0].pk}/change/")
    assert detail.status_code == 200 and b"Sum" in detail.content and b"<pre>" in detail.content
    assert staff_client.get("/admin/agents/agent/add/").status_code == 403


def test_admin_edits_go_through_actions(staff_client: Client, agents: list[Agent]) -> None:
    alpha = agents[0]
    response = staff_client.post(
        f"/admin/agents/agent/{alpha.pk}/change/",
        {"name": "Alpha 2", "slug": alpha.slug, "description": "", "visibility": "public"},
    )
    assert response.status_code == 302, response.content[:2000]
    alpha.refresh_from_db()
    assert (alpha.name, alpha.visibility) == ("Alpha 2", Visibility.PUBLIC)
    event = AuditEvent.objects.get(action="agent.updated", target_id=str(alpha.pk))
    assert event.details["fields"] == ["name", "visibility"] and event.actor.email == "staff@hermes.test"


def test_admin_shows_a_card_agents_name_as_its_card_says(staff_client: Client, agents: list[Agent]) -> None:
    # A refresh rewrites name and description from the card: staff edit only the visibility of such an agent.
    alpha = agents[0]
    Agent.objects.unscoped("test").filter(pk=alpha.pk).update(card_url="https://alpha.example.com/card.json")
    response = staff_client.post(
        f"/admin/agents/agent/{alpha.pk}/change/", {"name": "Renamed", "description": "x", "visibility": "public"}
    )
    assert response.status_code == 302, response.content[:2000]
    alpha.refresh_from_db()
    assert (alpha.name, alpha.description, alpha.visibility) == ("Alpha", "", Visibility.PUBLIC)
    page = staff_client.get(f"/admin/agents/agent/{alpha.pk}/change/").content.decode()
    assert 'name="visibility"' in page and 'name="name"' not in page


def test_admin_bulk_actions_and_delete(staff_client: Client, agents: list[Agent]) -> None:
    ids = [str(a.pk) for a in agents]
    staff_client.post("/admin/agents/agent/", {"action": "make_public", "_selected_action": ids})
    assert set(Agent.objects.unscoped("test").values_list("visibility", flat=True)) == {"public"}
    response = staff_client.post("/admin/agents/agent/", {"action": "refresh_cards", "_selected_action": ids[:1]})
    assert response.status_code == 302  # a card-less agent is reported, not an error page
    staff_client.post(f"/admin/agents/agent/{ids[1]}/delete/", {"post": "yes"})
    assert list(Agent.objects.unscoped("test").values_list("name", flat=True)) == ["Alpha"]
    assert AuditEvent.objects.filter(action="agent.deleted", target_id=ids[1]).exists()


def test_admin_keeps_a_federated_agent_private(staff_client: Client, agents: list[Agent]) -> None:
    remote = actions.federated_agent(agents[0].organization, "echo.globex@berlin")
    ids = [str(remote.pk), str(agents[0].pk)]
    response = staff_client.post(
        "/admin/agents/agent/", {"action": "make_public", "_selected_action": ids}, follow=True
    )
    assert response.status_code == 200 and "stays private" in response.content.decode()
    remote.refresh_from_db()
    assert remote.visibility == "private"  # refused with a message, the other agent still changed
    assert Agent.objects.unscoped("test").get(pk=agents[0].pk).visibility == "public"
    staff_client.post("/admin/agents/agent/", {"action": "make_private", "_selected_action": ids})
    assert set(Agent.objects.unscoped("test").filter(pk__in=ids).values_list("visibility", flat=True)) == {"private"}


def test_staff_who_may_only_view_agents_cannot_run_the_actions(agents: list[Agent]) -> None:
    """A view-only staff member could publish any org's private agent with "Make public"."""
    from django.contrib.auth.models import Permission

    viewer = UserFactory(email="viewer@hermes.test", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(content_type__app_label="agents", codename="view_agent"))
    client = Client()
    client.force_login(viewer)
    page = client.get("/admin/agents/agent/").content.decode()
    assert "Beta" in page and "make_public" not in page and "refresh_cards" not in page  # not offered
    ids = [str(agents[1].pk)]
    for action in ("make_public", "refresh_cards"):
        client.post("/admin/agents/agent/", {"action": action, "_selected_action": ids})  # and refused when posted
    assert Agent.objects.unscoped("test").get(pk=agents[1].pk).visibility == Visibility.PRIVATE
    assert not AuditEvent.objects.filter(action__in=["agent.updated", "agent.card_refreshed"]).exists()


def test_the_admin_actions_say_what_they_did(staff_client: Client, agents: list[Agent]) -> None:
    ids = [str(agent.pk) for agent in agents]
    Agent.objects.unscoped("test").filter(pk=agents[0].pk).update(visibility=Visibility.PUBLIC)
    made = staff_client.post("/admin/agents/agent/", {"action": "make_public", "_selected_action": ids}, follow=True)
    assert "Made 1 of 2 agent(s) public." in made.content.decode()  # the one that was already public is not counted
    made = staff_client.post("/admin/agents/agent/", {"action": "make_private", "_selected_action": ids}, follow=True)
    assert "Made 2 of 2 agent(s) private." in made.content.decode()
    refreshed = staff_client.post(
        "/admin/agents/agent/", {"action": "refresh_cards", "_selected_action": ids[:1]}, follow=True
    ).content.decode()
    assert "nothing to refresh" in refreshed and "Refreshed the cards of 0 of 1 agent(s)." in refreshed


# Retired agents (deleted while tasks referred to them): kept as they are, and deleting one that has tasks retires it


def _with_task(agent: Agent) -> Agent:
    from apps.tasks import actions as task_actions

    task_actions.create_task(
        org=agent.organization, agent=agent, message={"role": "user", "parts": [{"kind": "text", "text": "hi"}]}
    )
    return agent


@pytest.fixture
def retired(agents: list[Agent]) -> Agent:
    agent = _with_task(agents[0])
    assert actions.delete_agent(agent) is False
    return Agent.with_retired.unscoped("test").get(pk=agent.pk)


def test_a_retired_agent_is_read_only_in_the_admin(staff_client: Client, retired: Agent) -> None:
    page = staff_client.get(f"/admin/agents/agent/{retired.pk}/change/").content.decode()
    assert 'name="visibility"' not in page and 'name="name"' not in page and 'name="_save"' not in page
    response = staff_client.post(
        f"/admin/agents/agent/{retired.pk}/change/",
        {"name": "Revived", "description": "", "visibility": "public"},
        follow=True,
    )
    assert response.status_code == 200
    assert "Not saved: This agent was deleted while tasks referred to it (retired)" in response.content.decode()
    after = Agent.with_retired.unscoped("test").get(pk=retired.pk)
    assert (after.name, after.visibility, after.retired_at) == ("Alpha", Visibility.PRIVATE, retired.retired_at)
    assert not AuditEvent.objects.filter(action="agent.updated").exists()


@pytest.mark.parametrize("action", ["make_public", "make_private", "refresh_cards"])
def test_the_admin_actions_leave_retired_agents_as_they_are(
    staff_client: Client, agents: list[Agent], retired: Agent, action: str
) -> None:
    other = _with_task(actions.register_agent_manually(org=agents[1].organization, name="Gamma", url=agents[1].url))
    actions.delete_agent(other)
    ids = [str(retired.pk), str(other.pk), str(agents[1].pk)]  # two retired, one live
    response = staff_client.post("/admin/agents/agent/", {"action": action, "_selected_action": ids}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "2 retired agents left as they are" in page
    retired_rows = Agent.with_retired.unscoped("test").filter(pk__in=ids[:2])
    assert set(retired_rows.values_list("visibility", flat=True)) == {Visibility.PRIVATE}
    if action == "make_public":  # the live agent of the selection still changed
        assert "Made 1 of 1 agent(s) public." in page
        assert Agent.objects.unscoped("test").get(pk=agents[1].pk).visibility == Visibility.PUBLIC
    assert not AuditEvent.objects.filter(action="agent.updated", target_id__in=ids[:2]).exists()


def test_deleting_an_agent_with_tasks_in_the_admin_retires_it(staff_client: Client, agents: list[Agent]) -> None:
    alpha = _with_task(agents[0])
    confirm = staff_client.get(f"/admin/agents/agent/{alpha.pk}/delete/").content.decode()
    assert "permission to delete" not in confirm and "protected" not in confirm
    assert "retired, not deleted: its 1 task(s) keep it" in confirm and "Task:" not in confirm
    response = staff_client.post(f"/admin/agents/agent/{alpha.pk}/delete/", {"post": "yes"}, follow=True)
    assert "was retired, not deleted" in response.content.decode()
    after = Agent.with_retired.unscoped("test").get(pk=alpha.pk)
    assert after.retired_at is not None
    assert AuditEvent.objects.filter(action="agent.retired", target_id=str(alpha.pk)).exists()
    # Deleting it again leaves it as it is.
    again = staff_client.post(f"/admin/agents/agent/{alpha.pk}/delete/", {"post": "yes"}, follow=True)
    assert "Not deleted: This agent was deleted while tasks referred to it" in again.content.decode()
    assert Agent.with_retired.unscoped("test").get(pk=alpha.pk).retired_at == after.retired_at


def test_bulk_delete_in_the_admin_retires_agents_with_tasks(staff_client: Client, agents: list[Agent]) -> None:
    alpha = _with_task(agents[0])
    ids = [str(alpha.pk), str(agents[1].pk)]
    confirm = staff_client.post(
        "/admin/agents/agent/", {"action": "delete_selected", "_selected_action": ids}
    ).content.decode()
    assert "permission to delete" not in confirm and "protected" not in confirm
    assert "retired, not deleted" in confirm and "Agent: <a" in confirm  # Beta, no task: deleted outright
    response = staff_client.post(
        "/admin/agents/agent/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}, follow=True
    )
    assert "Of these, 1 was retired, not deleted" in response.content.decode()
    assert Agent.with_retired.unscoped("test").get(pk=alpha.pk).retired_at is not None
    assert not Agent.with_retired.unscoped("test").filter(pk=agents[1].pk).exists()


def test_a_retired_agent_whose_tasks_are_gone_can_be_deleted(staff_client: Client, retired: Agent) -> None:
    from apps.tasks.models import Task

    Task.objects.unscoped("test: the org that sent them was deleted").filter(agent=retired).delete()
    confirm = staff_client.get(f"/admin/agents/agent/{retired.pk}/delete/").content.decode()
    assert "retired" not in confirm.split('id="content"', 1)[1].split("</form>", 1)[0].lower()
    staff_client.post(f"/admin/agents/agent/{retired.pk}/delete/", {"post": "yes"})
    assert not Agent.with_retired.unscoped("test").filter(pk=retired.pk).exists()
