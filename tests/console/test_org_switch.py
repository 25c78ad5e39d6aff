"""A person in several orgs, with tabs open on more than one of them: what a tab left on the org switched away from
reads and sends (apps.orgs.decorators), and where the header's switcher lands (apps.orgs.views.switch).

alice owns acme and is a member of globex (a role that may not register agents)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.agents import actions as agent_actions
from apps.orgs import actions as org_actions
from apps.orgs.models import Membership
from apps.tasks import actions as task_actions
from apps.tasks.models import Task
from tests.console.conftest import HX, main_html
from tests.factories import access_for

pytestmark = pytest.mark.django_db

TEXT = {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}


@pytest.fixture
def two_orgs(alice: Any, org: Any, other_org: Any, charlie: Any) -> dict[str, Task]:
    """alice works in both; each org has one task."""
    Membership.objects.create(organization=other_org, user=alice, role="member")
    tasks = {}
    for each, who in ((org, alice), (other_org, charlie)):
        agent = agent_actions.register_agent_manually(org=each, name="Echo", url="https://agent.example.com/rpc")
        tasks[each.slug] = task_actions.create_task(org=each, agent=agent, message=TEXT, access=access_for(who, each))
    return tasks


def switched_to_globex(as_user: Any, alice: Any) -> Client:
    """alice's session after tab 2 switched to globex, while tab 1 still shows acme's page."""
    client = as_user(alice)
    assert client.get("/tasks/").status_code == 200  # tab 1 opens acme's task list
    assert client.post("/orgs/switch/", {"org": "globex"}).status_code == 302  # tab 2
    return client


@pytest.mark.parametrize(
    "url", ["/tasks/?status=submitted", "/tasks/", "/org/audit/?action=task.created", "/federation/outbox/"]
)
def test_a_fragment_read_by_a_page_of_the_org_switched_away_from_is_refused(
    as_user: Any, alice: Any, two_orgs: dict[str, Task], url: str
) -> None:
    client = switched_to_globex(as_user, alice)
    # The filter, the live refresh, the audit log's select, the outbox poll: htmx GETs from acme's page.
    stale = client.get(url, HTTP_X_HERMES_CONSOLE_ORG="acme", **HX)
    assert stale.status_code == 409
    assert stale["X-Hermes-Error"].startswith("This part of the page was not updated: this page was showing")
    assert "showing Acme," in stale["X-Hermes-Error"] and "switched to Globex" in stale["X-Hermes-Error"]
    assert str(two_orgs["globex"].pk) not in stale.content.decode()  # globex's rows never reach acme's page


def test_a_fragment_of_the_session_org_and_a_whole_page_still_load(
    as_user: Any, alice: Any, two_orgs: dict[str, Task]
) -> None:
    client = switched_to_globex(as_user, alice)
    globex_task = f'data-task-row="{two_orgs["globex"].pk}"'
    fresh = client.get("/tasks/", HTTP_X_HERMES_CONSOLE_ORG="globex", **HX)
    assert fresh.status_code == 200 and globex_task in fresh.content.decode()
    # A page read whole says in its header which org it shows: the session's, as before.
    assert globex_task in main_html(client.get("/tasks/", HTTP_X_HERMES_CONSOLE_ORG="acme"))
    boosted = client.get("/tasks/", HTTP_X_HERMES_CONSOLE_ORG="acme", HTTP_HX_BOOSTED="true", **HX)
    assert boosted.status_code == 200 and globex_task in boosted.content.decode()
    # No claim (a script, no JavaScript): the session's org.
    assert globex_task in client.get("/tasks/", **HX).content.decode()


def test_the_list_of_an_org_the_person_was_removed_from_is_not_refilled_with_another(
    as_user: Any, alice: Any, bob: Any, org: Any, other_org: Any, two_orgs: dict[str, Task]
) -> None:
    Membership.objects.create(organization=other_org, user=bob, role="member")
    client = as_user(bob)
    assert client.get("/tasks/").status_code == 200  # bob's tab shows acme's live list
    removed = Membership.objects.for_org(org).get(user=bob)
    org_actions.remove_member(access=access_for(alice, org), membership=removed)
    refresh = client.get("/tasks/", HTTP_X_HERMES_CONSOLE_ORG="acme", **HX)
    assert refresh.status_code == 409
    assert "you no longer have access to the organization 'acme'" in refresh["X-Hermes-Error"]
    assert str(two_orgs["globex"].pk) not in refresh.content.decode()


def test_a_refused_plain_post_comes_back_marked_so_its_form_is_filled_in_again(
    as_user: Any, alice: Any, org: Any, two_orgs: dict[str, Task]
) -> None:
    client = switched_to_globex(as_user, alice)
    agent = two_orgs["acme"].agent
    form = {"agent": str(agent.pk), "text": "meant for acme", "structured": "", "console_org": "acme"}
    refused = client.post("/tasks/new/", form, HTTP_REFERER="http://testserver/tasks/new/")
    assert refused.status_code == 302 and refused["Location"] == "http://testserver/tasks/new/"
    page = main_html(client.get(refused["Location"]))
    # static/js/hermes.js puts the typed message back when the page says its post was refused.
    assert '<li class="alert alert-error" data-refused-post>Nothing was done: this page was showing' in page
    made = Task.objects.unscoped("every org's: the refused post must have made none").values_list("pk", flat=True)
    assert set(made) == {task.pk for task in two_orgs.values()}
    # Other messages carry no such mark (the form's draft is then forgotten).
    switched = client.post("/orgs/switch/", {"org": "acme"}, follow=True)
    assert '<li class="alert alert-success">Now working in Acme.</li>' in main_html(switched)


def test_a_refused_post_from_a_task_page_of_the_org_switched_away_from_keeps_the_session_where_it_is(
    as_user: Any, alice: Any, two_orgs: dict[str, Task]
) -> None:
    """Sent back to acme's task page, the refusal switched the session back to acme (a task page of another of
    the person's orgs switches to it), undoing the other tab's switch under a message saying it was in globex."""
    client = switched_to_globex(as_user, alice)
    page = f"http://testserver/tasks/{two_orgs['acme'].pk}/"
    refused = client.post(f"/tasks/{two_orgs['acme'].pk}/cancel/", {"console_org": "acme"}, HTTP_REFERER=page)
    assert refused.status_code == 302 and refused["Location"] == "/"
    home = main_html(client.get("/"))
    assert "Nothing was done: this page belongs to Acme" in home and "Switched to" not in home
    # Reloading that page switches back (for every tab): the advice says so, not "reload to work in Globex".
    assert "switch back to Acme (reloading this page does that, for every tab)" in home
    # The same refusal of an htmx action on the page (its Cancel button), as a toast.
    toast = client.post(
        f"/tasks/{two_orgs['acme'].pk}/cancel/", HTTP_X_HERMES_CONSOLE_ORG="acme", HTTP_HX_CURRENT_URL=page, **HX
    )
    assert toast.status_code == 409 and "switch back to Acme" in toast["X-Hermes-Error"]
    assert client.get("/tasks/").context["request"].access.org.slug == "globex"  # the session stayed in globex
    assert Task.objects.for_org(two_orgs["acme"].organization_id).get(pk=two_orgs["acme"].pk).state == "submitted"


def test_switching_from_a_page_the_new_role_may_not_open_lands_on_its_section(
    as_user: Any, alice: Any, two_orgs: dict[str, Task]
) -> None:
    client = as_user(alice)
    assert client.get("/agents/register/").status_code == 200  # alice owns acme
    switched = client.post("/orgs/switch/", {"org": "globex", "next": "/agents/register/"})
    # A member of globex may not register agents: the agents list, not a 403.
    assert switched.status_code == 302 and switched["Location"] == "/agents/"
    page = client.get(switched["Location"])
    assert page.status_code == 200
    assert "Your role (Member) may not register, update and delete agents (agents:write)" in main_html(page)
    assert "Showing the Agents page instead." in main_html(page)
    # A page the new role may open is kept; back in acme, the owner may register again.
    assert client.post("/orgs/switch/", {"org": "acme", "next": "/agents/register/"})["Location"] == "/agents/register/"
    assert client.post("/orgs/switch/", {"org": "globex", "next": "/tasks/new/"})["Location"] == "/tasks/new/"
