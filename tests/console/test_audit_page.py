"""The organization's audit log page (/org/audit/): admins and owners read their org's trail, newest first, by
page and by action; developers and members are refused; charlie only ever sees globex's."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.core.audit import record
from apps.core.permissions import Access, Role
from apps.orgs import actions as org_actions
from tests.console.conftest import HX, main_html
from tests.factories import access_for, issue_api_key, key_client

pytestmark = pytest.mark.django_db


def _steps(org: Any, user: Any, count: int, *, keys: tuple[Any, ...] = (), action: str = "probe.step") -> None:
    for step in range(count):
        key = keys[step % len(keys)] if keys and step % 2 else None
        record(action, access=Access(org=org, role=Role.OWNER, user=user, api_key=key), target=org, step=step)


def _rows(html: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>", 1)[1], flags=re.S) if "<tbody>" in html else []


def test_the_log_shows_when_who_what_target_and_details(as_user: Any, org: Any, alice: Any, bob: Any) -> None:
    key, plaintext = issue_api_key(bob, org, scopes=["org:admin"], name="ci")
    org_actions.invite_member(access=access_for(alice, org), email="zoe@example.test")
    key_client(plaintext).post("/api/v1/invitations", {"email": "yan@example.test"}, format="json")
    response = as_user(alice).get("/org/audit/")
    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    by_key, by_alice, issued = _rows(main_html(response))
    # Newest first; the key as the keys page shows it, linked to its row there, with its creator.
    assert f'<a href="/org/keys/#key-{key.pk}"><code>{key.display}</code></a>' in by_key
    assert f"key of {bob.name}" in by_key and "<code>invitation.created</code>" in by_key
    assert "&quot;email&quot;: &quot;yan@example.test&quot;" in by_key  # details, as JSON, collapsed
    assert "<details><summary" in by_key
    assert alice.name in by_alice and "alice@acme.test" in by_alice and "/org/keys/" not in by_alice
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+">', by_alice)  # shown in local time by hermes.js
    # An event about a key names and links that key.
    assert "<code>api_key.created</code>" in issued and f'href="/org/keys/#key-{key.pk}"' in issued
    assert f"{key.display}</code></a>" in issued


def test_a_task_target_links_to_the_task_and_system_events_say_so(as_user: Any, org: Any, alice: Any) -> None:
    event = record("task.created", org=org)  # no actor: the system (a sweeper, a worker)
    event.target_type, event.target_id = "task", "abc123"
    event.save(update_fields=["target_type", "target_id"])
    html = main_html(as_user(alice).get("/org/audit/"))
    assert '<a href="/tasks/abc123/"><code title="abc123">abc123</code></a>' in html
    assert '<span class="muted">system</span>' in html


@pytest.mark.parametrize(("who", "status"), [("alice", 200), ("bob", 200), ("dave", 403), ("mia", 403)])
def test_who_may_read_it(
    as_user: Any, alice: Any, bob: Any, dave: Any, mia: Any, org: Any, who: str, status: int
) -> None:
    person = {"alice": alice, "bob": bob, "dave": dave, "mia": mia}[who]
    _steps(org, alice, 1)
    client = as_user(person)
    response = client.get("/org/audit/")
    assert response.status_code == status
    if status == 403:
        assert "may not read the organization&#x27;s audit log (org:audit); that takes an Owner or Admin." in (
            response.content.decode()
        )
        assert client.get("/org/audit/", **HX).status_code == 403
    # The tab is offered only to those it opens for.
    members = main_html(client.get("/org/members/"))
    assert ('href="/org/audit/"' in members) == (status == 200)


def test_charlie_sees_only_his_orgs_trail(as_user: Any, org: Any, other_org: Any, alice: Any, charlie: Any) -> None:
    _steps(org, alice, 2, action="acme.secret")
    _steps(other_org, charlie, 1, action="globex.step")
    record("user.password_changed", actor=charlie, target=charlie)  # his own account: in no org's trail
    client = as_user(charlie)
    html = main_html(client.get("/org/audit/"))
    assert "globex.step" in html and "acme.secret" not in html and "user.password_changed" not in html
    # Naming acme's action filters nothing of acme's in: it is no action of his trail, so the filter is ignored.
    filtered = main_html(client.get("/org/audit/", {"action": "acme.secret"}))
    assert "acme.secret" not in filtered and "globex.step" in filtered


def test_filter_by_action_over_htmx(as_user: Any, org: Any, alice: Any) -> None:
    _steps(org, alice, 3, action="task.created")
    _steps(org, alice, 2, action="agent.registered")
    client = as_user(alice)
    page = main_html(client.get("/org/audit/"))
    # The select offers the actions the trail holds, and swaps the table with the choice in the address bar.
    form = page.split('<form method="get"', 1)[1].split("</form>", 1)[0]
    assert 'hx-get="/org/audit/"' in form and 'hx-target="#audit-table"' in form and 'hx-push-url="true"' in form
    assert re.findall(r'<option value="([^"]*)"', form) == ["", "agent.registered", "task.created"]
    fragment = client.get("/org/audit/", {"action": "agent.registered"}, **HX)
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="audit-table"') and "<html" not in html
    assert len(_rows(html)) == 2 and "task.created" not in html
    whole = main_html(client.get("/org/audit/", {"action": "agent.registered"}))
    assert '<option value="agent.registered" selected>' in whole and len(_rows(whole)) == 2
    assert len(_rows(main_html(client.get("/org/audit/", {"action": "no.such"})))) == 5  # ignored, as the select says


def test_pages_of_50_keep_the_filter(as_user: Any, org: Any, alice: Any) -> None:
    _steps(org, alice, 60)
    _steps(org, alice, 1, action="other.step")
    client = as_user(alice)
    first = main_html(client.get("/org/audit/", {"action": "probe.step"}))
    assert len(_rows(first)) == 50 and "Page 1 of 2" in first
    assert 'href="?action=probe.step&amp;page=2">Older</a>' in first and "Newer" not in first
    second = main_html(client.get("/org/audit/", {"action": "probe.step", "page": "2"}))
    assert len(_rows(second)) == 10 and 'href="?action=probe.step&amp;page=1">Newer</a>' in second
    assert "&quot;step&quot;: 0" in second and "&quot;step&quot;: 59" in first  # newest first
    unfiltered = main_html(client.get("/org/audit/"))
    assert 'href="?page=2">Older</a>' in unfiltered
    assert len(_rows(main_html(client.get("/org/audit/", {"page": "99"})))) == 11  # past the end: the last page


def test_a_page_of_50_takes_a_fixed_number_of_queries(
    as_user: Any, org: Any, alice: Any, bob: Any, django_assert_num_queries: Any
) -> None:
    keys = tuple(issue_api_key(person, org, scopes=["org:audit"])[0] for person in (alice, bob, alice))
    _steps(org, alice, 30, keys=keys)
    _steps(org, bob, 30, keys=keys, action="probe.other")
    client = as_user(alice)
    client.get("/org/audit/")
    # session, user, memberships (org and role); the actions for the select; the count and the page (with each
    # actor) of the paginator; the page's API keys in one query; the header's org switcher (every console page).
    with django_assert_num_queries(8):
        response = client.get("/org/audit/")
    html = main_html(response)
    assert len(_rows(html)) == 50 and all(key.display in html for key in keys)


def test_member_changes_name_the_person(as_user: Any, org: Any, alice: Any, mia: Any) -> None:
    """The log shows no user ids anywhere else: a removal or role change says whom it was about."""
    from apps.orgs.models import Membership

    membership = Membership.objects.for_org(org).get(user=mia)
    org_actions.change_role(access=access_for(alice, org), membership=membership, role=Role.DEVELOPER)
    org_actions.remove_member(access=access_for(alice, org), membership=membership)
    removed, changed = _rows(main_html(as_user(alice).get("/org/audit/")))[:2]
    assert "member.removed" in removed and f"<br>{mia.email}" in removed
    assert "member.role_changed" in changed and f"<br>{mia.email}" in changed
