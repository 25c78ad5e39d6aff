"""Organization console pages under the role matrix: alice owner, bob admin, dave developer, mia member (acme);
charlie owns globex and must never reach acme's objects (404, like a missing id)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.test import Client

from apps.orgs import actions as org_actions
from apps.orgs.models import APIKey, Invitation, Membership, Organization
from tests.console.conftest import HX, main_html
from tests.factories import access_for, issue_api_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(alice: Any, bob: Any, dave: Any, mia: Any, charlie: Any) -> dict[str, Any]:
    return {"alice": alice, "bob": bob, "dave": dave, "mia": mia, "charlie": charlie}


def membership(org: Any, user: Any) -> Membership:
    return Membership.objects.for_org(org).get(user=user)


@pytest.mark.parametrize("who", ["alice", "bob", "dave", "mia"])
def test_every_member_sees_the_members_page(as_user: Any, team: dict[str, Any], who: str) -> None:
    response = as_user(team[who]).get("/org/members/")
    assert response.status_code == 200
    html = main_html(response)
    assert "mia@acme.test" in html and "charlie@globex.test" not in html
    # Role controls only for owners; the invitation form only for admins and owners.
    assert ('name="role"' in html and "Change role" in html) == (who == "alice")
    assert ("Send invitation" in html) == (who in {"alice", "bob"})


@pytest.mark.parametrize(("who", "status"), [("alice", 302), ("bob", 403), ("dave", 403), ("mia", 403)])
def test_only_owners_change_roles(as_user: Any, team: dict[str, Any], org: Any, who: str, status: int) -> None:
    target = membership(org, team["mia"])
    response = as_user(team[who]).post(f"/org/members/{target.pk}/role/", {"role": "developer"})
    assert response.status_code == status
    target.refresh_from_db()
    assert target.role == ("developer" if status == 302 else "member")
    if status == 403:
        refusal = "may not change member roles and manage owners (org:roles); that takes an Owner."
        assert refusal in response.content.decode()


def test_role_change_over_htmx_returns_only_the_row(as_user: Any, team: dict[str, Any], org: Any) -> None:
    target = membership(org, team["dave"])
    response = as_user(team["alice"]).post(f"/org/members/{target.pk}/role/", {"role": "admin"}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="member-{target.pk}">') and "<html" not in html
    assert "HX-Request" in response["Vary"]
    assert 'hx-swap-oob="innerHTML"' in html and "dave@acme.test is now Admin" in html  # flash message out-of-band


def test_the_last_owner_cannot_be_demoted(as_user: Any, team: dict[str, Any], org: Any) -> None:
    owner = membership(org, team["alice"])
    response = as_user(team["alice"]).post(f"/org/members/{owner.pk}/role/", {"role": "member"}, **HX)
    assert response.status_code == 409 and "owner" in response["X-Hermes-Error"].lower()
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_the_last_owner_is_told_before_trying_to_leave(as_user: Any, team: dict[str, Any], org: Any) -> None:
    # The Leave button was offered and refused only after its confirmation.
    page = main_html(as_user(team["alice"]).get("/org/members/"))
    assert "You are the only owner: make someone else an owner before leaving." in page
    assert main_html(as_user(team["mia"]).get("/org/members/")).count("data-sole-owner") == 0  # a member may leave
    Membership.objects.for_org(org).filter(user=team["bob"]).update(role="owner")
    assert "data-sole-owner" not in main_html(as_user(team["alice"]).get("/org/members/"))


def test_charlie_cannot_touch_acme_members(as_user: Any, team: dict[str, Any], org: Any) -> None:
    target = membership(org, team["mia"])
    client = as_user(team["charlie"])
    assert client.post(f"/org/members/{target.pk}/role/", {"role": "owner"}).status_code == 404
    assert client.post(f"/org/members/{target.pk}/remove/").status_code == 404
    assert Membership.objects.for_org(org).filter(pk=target.pk, role="member").exists()


@pytest.mark.parametrize(
    ("who", "victim", "removed"),
    [("bob", "mia", True), ("bob", "alice", False), ("dave", "mia", False), ("alice", "bob", True)],
)
def test_remove_member_under_the_matrix(
    as_user: Any, team: dict[str, Any], org: Any, who: str, victim: str, removed: bool
) -> None:
    target = membership(org, team[victim])
    response = as_user(team[who]).post(f"/org/members/{target.pk}/remove/", **HX)
    assert response.status_code == (200 if removed else 403)
    assert Membership.objects.for_org(org).filter(pk=target.pk).exists() is not removed
    if not removed:
        assert response["X-Hermes-Error"]  # the toast's text


def test_a_member_may_leave(as_user: Any, team: dict[str, Any], org: Any) -> None:
    own = membership(org, team["mia"])
    response = as_user(team["mia"]).post(f"/org/members/{own.pk}/remove/", **HX)
    assert response.status_code == 204 and response["HX-Redirect"] == "/"
    assert not Membership.objects.for_org(org).filter(pk=own.pk).exists()


def test_invite_and_accept(
    as_user: Any,
    team: dict[str, Any],
    org: Any,
    client: Any,
    django_capture_on_commit_callbacks: Any,
    eager_celery: None,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(team["bob"]).post(
            "/org/invitations/", {"email": "Zoe@Example.test", "role": "developer"}, **HX
        )
    assert response.status_code == 200 and "zoe@example.test" in response.content.decode()
    assert len(mail.outbox) == 1
    link = next(word for word in mail.outbox[0].body.split() if "/invitations/" in word)
    path = "/invitations/" + link.split("/invitations/", 1)[1]
    page = client.get(path)
    assert page.status_code == 200 and "Sign in to accept" in page.content.decode()
    from tests.factories import UserFactory

    # Someone else signed in is told before clicking, and offered to sign out and come back.
    wrong = main_html(as_user(team["charlie"]).get(path))
    assert "You are signed in as <strong>charlie@globex.test</strong>, but this invitation is for" in wrong
    assert "Sign out and continue" in wrong and "Accept the invitation" not in wrong
    zoe = UserFactory(email="zoe@example.test")
    zoe_client = as_user(zoe)
    accepted = zoe_client.post(path)
    assert accepted.status_code == 302
    assert membership(org, zoe).role == "developer"
    assert "you are developer" in main_html(zoe_client.get("/"))
    # The link again: she is a member (it told her to ask for a new invitation).
    assert "You are a member of Acme" in main_html(zoe_client.get(path))
    first = as_user(team["bob"]).post("/org/invitations/", {"email": "yan@example.test", "role": "member"}, **HX)
    assert "Invitation sent to yan@example.test as Member." in first.content.decode()
    again = as_user(team["bob"]).post("/org/invitations/", {"email": "yan@example.test", "role": "admin"}, **HX)
    # The first email's link stops working: the admin is told (it was replaced without a word).
    assert "It replaces the earlier invitation to this address, whose link no longer works." in again.content.decode()


def test_a_newcomer_registers_from_the_invitation_and_comes_back_to_accept(
    as_user: Any, team: dict[str, Any], org: Any, client: Any
) -> None:
    issued = org_actions.invite_member(access=access_for(team["alice"], org), email="ned@example.test", role="member")
    path = f"/invitations/{issued.token}/"
    invitation = client.get(path).content.decode()
    register = f"/accounts/register/?next={path}&amp;email=ned%40example.test"
    assert register in invitation
    form = client.get(register.replace("&amp;", "&")).content.decode()
    assert 'value="ned@example.test"' in form and f"/accounts/login/?next={path}" in form
    secret = "a-long-secret-42"
    body = {"email": "ned@example.test", "name": "Ned", "password1": secret, "password2": secret}
    registered = client.post(register.replace("&amp;", "&"), body)
    assert registered.status_code == 302 and registered["Location"] == path
    assert client.post(path).status_code == 302
    assert Membership.objects.for_org(org).get(user__email="ned@example.test").role == "member"
    # `next` only ever points at this site.
    elsewhere = Client().post("/accounts/register/?next=https://evil.example/", {**body, "email": "eve@example.test"})
    assert elsewhere.status_code == 302 and elsewhere["Location"] == "/orgs/new/"


def test_invite_errors_are_precise(as_user: Any, team: dict[str, Any]) -> None:
    client = as_user(team["bob"])
    bad = client.post("/org/invitations/", {"email": "not-an-email", "role": "member"}, **HX)
    assert bad.status_code == 422 and "valid email" in bad.content.decode()
    existing = client.post("/org/invitations/", {"email": "mia@acme.test", "role": "member"}, **HX)
    assert existing.status_code == 422 and "already a member" in existing.content.decode()
    # Admins may not invite owners: the choice is not offered and a forged post is refused.
    owner = client.post("/org/invitations/", {"email": "x@example.test", "role": "owner"}, **HX)
    assert owner.status_code == 422 and "Select a valid choice" in owner.content.decode()
    assert not Invitation.objects.for_org(team["bob"].memberships.first().organization).exists()


@pytest.mark.parametrize("who", ["dave", "mia"])
def test_developers_and_members_cannot_invite(as_user: Any, team: dict[str, Any], who: str) -> None:
    assert (
        as_user(team[who]).post("/org/invitations/", {"email": "x@example.test", "role": "member"}).status_code == 403
    )


def test_revoke_invitation_and_charlie_gets_404(as_user: Any, team: dict[str, Any], org: Any) -> None:
    as_user(team["alice"]).post("/org/invitations/", {"email": "y@example.test", "role": "member"})
    invitation = Invitation.objects.for_org(org).get()
    assert as_user(team["charlie"]).post(f"/org/invitations/{invitation.pk}/revoke/").status_code == 404
    response = as_user(team["bob"]).post(f"/org/invitations/{invitation.pk}/revoke/", **HX)
    assert response.status_code == 200 and "No pending invitations" in response.content.decode()
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None


def test_unknown_invitation_link_is_404(client: Any) -> None:
    assert client.get("/invitations/nope/").status_code == 404


# --- API keys -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob", "dave", "mia"])
def test_keys_page_access(as_user: Any, team: dict[str, Any], who: str) -> None:
    # Everyone has the page (and the tab): a member sees the keys they created; only creating is a developer's.
    response = as_user(team[who]).get("/org/keys/")
    assert response.status_code == 200
    html = main_html(response)
    assert 'href="/org/keys/"' in html
    assert ("Create key</button>" in html) == (who != "mia")
    if who == "mia":
        assert "You have no API keys in this organization." in html
        assert "Your role (Member) may not create and rotate one&#x27;s own API keys (keys:own)" in html


def test_a_demoted_developer_sees_and_revokes_their_own_keys(as_user: Any, team: dict[str, Any], org: Any) -> None:
    daves, _ = issue_api_key(team["dave"], org, scopes=["tasks:read"], name="laptop")
    bobs, _ = issue_api_key(team["bob"], org, scopes=["agents:read"])
    Membership.objects.for_org(org).filter(user=team["dave"]).update(role="member")
    client = as_user(team["dave"])
    page = main_html(client.get("/org/keys/"))
    assert daves.display in page and bobs.display not in page
    assert f"/org/keys/{daves.pk}/revoke/" in page and f"/org/keys/{daves.pk}/rotate/" not in page
    assert client.post("/org/keys/", {"name": "x", "scopes": ["tasks:read"]}, **HX).status_code == 403
    assert client.post(f"/org/keys/{daves.pk}/rotate/", **HX).status_code == 403
    assert client.post(f"/org/keys/{bobs.pk}/revoke/", **HX).status_code == 404
    revoked = client.post(f"/org/keys/{daves.pk}/revoke/", **HX)
    assert revoked.status_code == 200 and "revoked" in revoked.content.decode()
    daves.refresh_from_db()
    bobs.refresh_from_db()
    assert daves.revoked_at is not None and bobs.revoked_at is None


def test_a_key_whose_creator_left_is_shown_so_and_can_be_rotated(as_user: Any, team: dict[str, Any], org: Any) -> None:
    key, _ = issue_api_key(team["dave"], org, scopes=["tasks:read"], name="ci")
    membership(org, team["dave"]).delete()
    client = as_user(team["bob"])
    row = main_html(client.get("/org/keys/")).split(f'<tr id="key-{key.pk}">', 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge badge-warn">creator gone</span>' in row
    assert "dave@acme.test is no longer an active member: the key answers 401 key_creator_gone." in row
    assert f"/org/keys/{key.pk}/rotate/" in row and f"/org/keys/{key.pk}/revoke/" in row
    rotated = client.post(f"/org/keys/{key.pk}/rotate/", {"grace_hours": "0"}, **HX)
    assert rotated.status_code == 200
    key.refresh_from_db()
    assert key.rotated_to is not None and key.rotated_to.created_by == team["bob"]


def test_create_key_shows_the_plaintext_once(as_user: Any, team: dict[str, Any], org: Any) -> None:
    client = as_user(team["dave"])
    response = client.post("/org/keys/", {"name": "CI", "scopes": ["tasks:read", "tasks:write"]}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    key = APIKey.objects.for_org(org).get()
    start = html.index("data-plaintext-key>") + len("data-plaintext-key>")
    plaintext = html[start : html.index("<", start)]
    assert plaintext.startswith("hrm_") and plaintext.endswith(key.last_four)
    assert 'data-copy="#issued-key"' in html and "no-store" in response["Cache-Control"]
    assert key.scopes == ["tasks:read", "tasks:write"] and key.created_by == team["dave"]
    again = client.get("/org/keys/").content.decode()
    assert plaintext not in again and key.display in again
    # The key works against the API.
    from tests.factories import key_client

    assert key_client(plaintext).get("/api/v1/keys").status_code in {200, 403}


def test_a_developer_cannot_grant_scopes_beyond_the_role(as_user: Any, team: dict[str, Any], org: Any) -> None:
    response = as_user(team["dave"]).post("/org/keys/", {"name": "x", "scopes": ["org:admin"]}, **HX)
    assert response.status_code == 422 and "Select a valid choice" in response.content.decode()
    assert not APIKey.objects.for_org(org).exists()
    empty = as_user(team["dave"]).post("/org/keys/", {"name": "", "scopes": []}, **HX)
    assert empty.status_code == 422 and "required" in empty.content.decode()


def test_rotate_and_revoke(as_user: Any, team: dict[str, Any], org: Any) -> None:
    key, _ = issue_api_key(team["bob"], org, scopes=["agents:read"])
    client = as_user(team["bob"])
    rotated = client.post(f"/org/keys/{key.pk}/rotate/", {"grace_hours": "1"}, **HX)
    assert rotated.status_code == 200 and "data-plaintext-key" in rotated.content.decode()
    key.refresh_from_db()
    assert key.rotated_to is not None and key.expires_at is not None
    again = client.post(f"/org/keys/{key.pk}/rotate/", {"grace_hours": "1"}, **HX)
    assert again.status_code == 409 and "already rotated" in again["X-Hermes-Error"]
    successor = key.rotated_to
    revoked = client.post(f"/org/keys/{successor.pk}/revoke/", **HX)
    assert revoked.status_code == 200
    successor.refresh_from_db()
    assert successor.revoked_at is not None


@pytest.mark.parametrize(
    ("grace_hours", "said"),
    [
        ("0", "rotated; the old key has stopped working."),
        ("1", "rotated; the old key stops working at its new expiry."),
    ],
)
def test_the_rotation_message_says_when_the_old_key_stops(
    as_user: Any, team: dict[str, Any], org: Any, grace_hours: str, said: str
) -> None:
    # "Immediately" said the old key "stops working at its new expiry", while the table already showed it expired.
    key, _ = issue_api_key(team["bob"], org, scopes=["agents:read"])
    rotated = as_user(team["bob"]).post(f"/org/keys/{key.pk}/rotate/", {"grace_hours": grace_hours}, **HX)
    assert rotated.status_code == 200
    html = rotated.content.decode()
    assert f"Key {key.display} {said}" in html
    assert ("at its new expiry" in html) == (grace_hours != "0")


def test_rotating_immediately_asks_first(as_user: Any, team: dict[str, Any], org: Any) -> None:
    key, _ = issue_api_key(team["bob"], org, scopes=["agents:read"], name="deploy")
    html = main_html(as_user(team["bob"]).get("/org/keys/"))
    options = html.split(f'id="grace-{key.pk}"', 1)[1].split("</select>", 1)[0]
    # Only "Immediately" asks (hermes.js, while it is the chosen option): it ends the old key at once.
    assert (
        f'<option value="0" data-confirm="Rotate {key.display} (deploy) now? Programs using it stop working '
        'immediately.">Immediately</option>' in options
    )
    assert options.count("data-confirm") == 1


def test_a_developer_cannot_manage_someone_elses_key(as_user: Any, team: dict[str, Any], org: Any) -> None:
    key, _ = issue_api_key(team["bob"], org, scopes=["agents:read"])
    client = as_user(team["dave"])
    page = main_html(client.get("/org/keys/"))
    # As in the API: another person's key is not listed, and is a 404.
    assert key.display not in page and f"/org/keys/{key.pk}/revoke/" not in page
    assert client.post(f"/org/keys/{key.pk}/revoke/").status_code == 404
    assert client.post(f"/org/keys/{key.pk}/rotate/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_charlie_cannot_rotate_or_revoke_acme_keys(as_user: Any, team: dict[str, Any], org: Any) -> None:
    key, _ = issue_api_key(team["alice"], org, scopes=["agents:read"])
    client = as_user(team["charlie"])
    assert client.post(f"/org/keys/{key.pk}/rotate/").status_code == 404
    assert client.post(f"/org/keys/{key.pk}/revoke/").status_code == 404
    assert key.display not in client.get("/org/keys/").content.decode()


# --- Settings and usage ---------------------------------------------------------------------------------------


def test_settings_under_the_matrix(as_user: Any, team: dict[str, Any], org: Any) -> None:
    assert as_user(team["mia"]).post("/org/settings/", {"name": "Hacked", "plan": "enterprise"}).status_code == 403
    # Admins rename; the plan field is disabled for them, so a forged plan is ignored.
    assert as_user(team["bob"]).post("/org/settings/", {"name": "Acme Inc", "plan": "enterprise"}).status_code == 302
    org.refresh_from_db()
    assert (org.name, org.plan) == ("Acme Inc", "free")
    assert as_user(team["alice"]).post("/org/settings/", {"name": "Acme Inc", "plan": "team"}).status_code == 302
    org.refresh_from_db()
    assert org.plan == "team"
    page = main_html(as_user(team["bob"]).get("/org/settings/"))
    assert "Delete the organization" not in page


def test_owner_deletes_the_org_after_typing_its_slug(as_user: Any, team: dict[str, Any], org: Any) -> None:
    client = as_user(team["alice"])
    wrong = client.post("/org/delete/", {"confirm": "acme-typo"})
    # The page comes back with the error under the field and what was typed still in it, to correct.
    assert wrong.status_code == 422 and Organization.objects.filter(pk=org.pk).exists()
    page = main_html(wrong)
    assert "exactly" in page and 'value="acme-typo"' in page
    assert as_user(team["bob"]).post("/org/delete/", {"confirm": "acme"}).status_code == 403
    # Another org's task on one of acme's public agents holds the delete back, with the reason on the page.
    from apps.agents import actions as agent_actions
    from apps.tasks import actions as task_actions

    shared = agent_actions.register_agent_manually(
        org=org, name="Shared", url="https://agent.example.com/rpc", visibility="public"
    )
    other = Organization.objects.create(name="Initech", slug="initech")
    held = task_actions.create_task(org=other, agent=shared, message={"role": "user", "parts": [{"text": "x"}]})
    refused = main_html(client.post("/org/delete/", {"confirm": "acme"}))
    assert "other organizations have tasks in progress on its public agents (Shared)" in refused
    assert Organization.objects.filter(pk=org.pk).exists()
    task_actions.finish(held, "completed")  # finished, it keeps a stand-in of the agent in initech
    assert client.post("/org/delete/", {"confirm": "acme"}).status_code == 302
    assert not Organization.objects.filter(pk=org.pk).exists()


def test_usage_page_shows_counters_and_plans(as_user: Any, team: dict[str, Any], org: Any) -> None:
    from apps.orgs import quotas

    quotas.record_task(org)
    quotas.record_task(org)
    response = as_user(team["mia"]).get("/org/usage/")
    html = main_html(response)
    assert response.status_code == 200
    assert "2 <span" in html and "of 1000" in html  # two tasks today against the free plan's 1000
    fragment = as_user(team["mia"]).get("/org/usage/", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="usage-panel"')


def test_dashboard_counts(as_user: Any, team: dict[str, Any], org: Any) -> None:
    html = main_html(as_user(team["mia"]).get("/"))
    assert 'Members</span><p class="stat">4<' in html and 'Agents</span><p class="stat">0<' in html
    # A member is offered only the steps a member can take (keys, agents and invitations were 403s).
    assert "Send a task" in html and "Create an API key" not in html and "Register an agent" not in html
    assert "Invite your team" not in html
    owner = main_html(as_user(team["alice"]).get("/"))
    assert all(step in owner for step in ("Create an API key", "Register an agent", "Send a task", "Invite your team"))
    # Only steps with something behind them: no empty marketplace, no demo agents once the org has agents.
    assert "or assign the demo agents" in owner and "marketplace" not in owner
    from apps.agents.actions import register_agent_manually

    register_agent_manually(org=org, name="Mine", url="https://mine.example.com/")
    register_agent_manually(
        org=team["charlie"].memberships.get().organization, name="Pub", url="https://p.example/", visibility="public"
    )
    later = main_html(as_user(team["alice"]).get("/"))
    assert "or assign the demo agents" not in later and "marketplace</a>" in later


def _queries(client: Any, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/org/members/", "/org/keys/", "/agents/", "/federation/dlq/", "/federation/outbox/"])
def test_list_pages_do_not_query_per_row(as_user: Any, team: dict[str, Any], org: Any, url: str) -> None:
    """Query counts stay flat as rows grow (no N+1): measured with few rows, then with more."""
    from apps.agents.actions import register_agent_manually
    from apps.federation import actions as federation_actions
    from tests.console.test_federation_pages import dead_letter
    from tests.factories import MembershipFactory

    peer = federation_actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    federation_actions.add_key(peer, secret=b"k1" * 16)

    def add_rows(n: int) -> None:
        for _ in range(n):
            MembershipFactory(organization=org)
            issue_api_key(team["bob"], org, scopes=["agents:read"])
            register_agent_manually(org=org, name="Agent", url="https://agent.example.com/rpc")
            dead_letter(org, peer)

    client = as_user(team["alice"])
    client.get(url)  # the first page of a session remembers its org (one session write)
    add_rows(1)
    few = _queries(client, url)
    add_rows(4)
    assert _queries(client, url) == few


def test_a_post_from_a_page_of_the_org_switched_away_from_does_nothing(
    as_user: Any, team: dict[str, Any], org: Any, other_org: Any
) -> None:
    # alice works in acme and globex; a tab still shows acme after she switched to globex in another.
    Membership.objects.create(organization=other_org, user=team["alice"], role="owner")
    client = as_user(team["alice"])
    assert client.post("/orgs/switch/", {"org": "globex"}).status_code == 302
    stale_htmx = client.post(
        "/org/keys/", {"name": "meant for acme", "scopes": ["tasks:read"]}, HTTP_X_HERMES_CONSOLE_ORG="acme", **HX
    )
    assert stale_htmx.status_code == 409
    assert "showing Acme, but" in stale_htmx["X-Hermes-Error"]
    stale_form = client.post(
        "/org/invitations/", {"email": "new@acme.test", "role": "admin", "console_org": "acme"}, follow=True
    )
    assert "Nothing was done" in stale_form.content.decode()
    assert not APIKey.objects.for_org(other_org).filter(name="meant for acme").exists()
    assert not Invitation.objects.for_org(other_org).exists()
    # The page of the org in the session acts as before.
    fresh = client.post(
        "/org/keys/", {"name": "for globex", "scopes": ["tasks:read"]}, HTTP_X_HERMES_CONSOLE_ORG="globex", **HX
    )
    assert fresh.status_code == 200 and APIKey.objects.for_org(other_org).filter(name="for globex").exists()


def test_the_header_names_the_role_by_its_label(as_user: Any, team: dict[str, Any]) -> None:
    header = as_user(team["dave"]).get("/org/members/").content.decode().split('<main id="main"', 1)[0]
    assert "Acme · Developer</span>" in header  # it said "developer", while the switcher says "Developer"


def test_switching_org_stays_in_the_section_but_never_on_an_old_objects_page(
    as_user: Any, team: dict[str, Any], org: Any, other_org: Any
) -> None:
    from apps.agents.actions import register_agent_manually

    Membership.objects.create(organization=other_org, user=team["alice"], role="member")
    agent = register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")
    client = as_user(team["alice"])
    for path in ("/agents/", "/tasks/", "/federation/dlq/", "/federation/audit/", "/org/keys/", "/org/audit/"):
        header = client.get(path).content.decode().split('<main id="main"', 1)[0]
        assert f'<input type="hidden" name="next" value="{path}">' in header, path
    for path in (f"/agents/{agent.pk}/", "/"):  # an object of acme's, the dashboard: nothing to come back to
        assert 'name="next"' not in client.get(path).content.decode().split('<main id="main"', 1)[0], path
    switched = client.post("/orgs/switch/", {"org": "globex", "next": "/agents/"})
    assert switched.status_code == 302 and switched["Location"] == "/agents/"
    # A detail page of the org switched away from would switch straight back (or 404): the dashboard instead.
    back = client.post("/orgs/switch/", {"org": "acme", "next": f"/agents/{agent.pk}/"})
    assert back["Location"] == "/"
    assert client.post("/orgs/switch/", {"org": "globex", "next": "https://evil.example/agents/"})["Location"] == "/"


def test_a_removed_member_is_told_why_the_org_is_gone(as_user: Any, team: dict[str, Any], org: Any) -> None:
    client = as_user(team["mia"])
    assert client.get("/tasks/").status_code == 200  # working in acme
    org_actions.remove_member(access=access_for(team["alice"], org), membership=membership(org, team["mia"]))
    page = client.get("/tasks/", follow=True).content.decode()
    assert "You no longer have access to the organization you were working in" in page
    # Once: the next page says nothing more.
    assert "no longer have access" not in client.get("/orgs/new/").content.decode()


def test_a_post_from_a_page_of_an_org_lost_since_says_so(
    as_user: Any, team: dict[str, Any], org: Any, other_org: Any
) -> None:
    Membership.objects.create(organization=other_org, user=team["bob"], role="admin")
    client = as_user(team["bob"])
    assert client.post("/orgs/switch/", {"org": "acme"}).status_code == 302
    org_actions.remove_member(access=access_for(team["alice"], org), membership=membership(org, team["bob"]))
    stale = client.post("/org/keys/", {"name": "k", "scopes": ["tasks:read"]}, HTTP_X_HERMES_CONSOLE_ORG="acme", **HX)
    assert stale.status_code == 409
    assert "no longer have access to the organization 'acme'" in stale["X-Hermes-Error"]
    assert not APIKey.objects.for_org(other_org).exists()
