"""The org API end to end: orgs, members, invitations, bad input, pagination, the schema."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from apps.core.models import AuditEvent
from apps.orgs.models import Invitation, Membership, Organization
from tests.factories import MembershipFactory, UserFactory, issue_api_key, key_client

pytestmark = pytest.mark.django_db


# --- Organizations ---------------------------------------------------------------------------------------------


def test_list_my_orgs_with_my_role(org: Any, alice: Any, other_org: Any, charlie: Any, client_for: Any) -> None:
    MembershipFactory(organization=other_org, user=alice, role="member")
    response = client_for(alice).get("/api/v1/orgs")
    assert response.status_code == 200
    assert {(row["slug"], row["role"]) for row in response.data["results"]} == {("acme", "owner"), ("globex", "member")}
    assert "next" in response.data  # cursor pagination


def test_a_key_sees_only_its_org(org: Any, alice: Any, other_org: Any, client_for: Any) -> None:
    MembershipFactory(organization=other_org, user=alice, role="owner")
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)
    assert [row["slug"] for row in client.get("/api/v1/orgs").data["results"]] == ["acme"]
    assert client.get("/api/v1/orgs/globex").status_code == 404
    assert client.get("/api/v1/orgs/acme").status_code == 200
    refused = client.post("/api/v1/orgs", {"name": "New", "slug": "new"}, format="json")
    assert refused.status_code == 403 and refused.data["error"]["code"] == "session_required"


def test_create_org(alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    response = client.post("/api/v1/orgs", {"name": "Initech", "slug": "initech"}, format="json")
    assert response.status_code == 201 and response.data["role"] == "owner"
    taken = client.post("/api/v1/orgs", {"name": "Again", "slug": "initech"}, format="json")
    assert taken.status_code == 400 and "slug" in taken.data["error"]["details"]
    bad = client.post("/api/v1/orgs", {"name": "", "slug": "no spaces"}, format="json")
    assert bad.status_code == 400 and set(bad.data["error"]["details"]) == {"name", "slug"}
    # Federation addresses are case-insensitive: a mixed-case slug is the lower-case one (here taken), and an
    # underscore is refused as the help text says (both were accepted, and `QA_Org` was unreachable by peers).
    again = client.post("/api/v1/orgs", {"name": "Shouting", "slug": "INITECH"}, format="json")
    assert again.status_code == 400
    assert again.data["error"]["details"]["slug"] == ["The slug 'initech' is taken; choose another."]
    underscore = client.post("/api/v1/orgs", {"name": "U", "slug": "qa_org"}, format="json")
    assert underscore.data["error"]["details"]["slug"] == [
        "'qa_org' is not a slug: use lowercase letters, digits and single hyphens, e.g. acme-labs."
    ]
    assert (
        client.post("/api/v1/orgs", {"name": "Mixed", "slug": "Mixed-Case"}, format="json").data["slug"] == "mixed-case"
    )


def test_names_refuse_control_characters_on_every_entry(org: Any, alice: Any, client_for: Any) -> None:
    """A bidi override made a name display in another order than it was stored; a newline broke list rows. The
    API and the console refuse both, naming the character (apps/core/validators.py)."""
    client = client_for(alice)
    spoof = client.post("/api/v1/orgs", {"name": "Acme\u202egnp.exe", "slug": "spoof"}, format="json")
    assert spoof.status_code == 400
    assert spoof.data["error"]["details"]["name"] == [
        "Names cannot contain control characters: this one has U+202E (RIGHT-TO-LEFT OVERRIDE) at position 5."
    ]
    newline = client.patch("/api/v1/orgs/acme", {"name": "Acme\nInc"}, format="json")
    assert newline.data["error"]["details"]["name"] == [
        "Names cannot contain control characters: this one has U+000A (a control character) at position 5."
    ]
    key = client.post("/api/v1/keys", {"name": "ci\u2066", "scopes": ["org:read"]}, format="json")
    assert key.status_code == 400 and "U+2066" in key.data["error"]["details"]["name"][0]
    # Right-to-left marks reorder nothing around them: an Arabic or Hebrew name keeps them.
    rtl = client.patch("/api/v1/orgs/acme", {"name": "\u05e9\u05dc\u05d5\u05dd\u200f"}, format="json")
    assert rtl.status_code == 200
    assert Organization.objects.get(slug="acme").name == "\u05e9\u05dc\u05d5\u05dd\u200f"
    page = client.post("/org/settings/", {"name": "Acme\u202e", "plan": "free"})
    assert "U+202E" in page.content.decode()
    assert Organization.objects.get(slug="acme").name == "\u05e9\u05dc\u05d5\u05dd\u200f"


def test_names_stored_before_the_rule_are_cleaned_and_the_admin_refuses_new_ones(org: Any, alice: Any) -> None:
    """The rule lives on the model fields too, so the Django admin's forms (model validation) refuse such names;
    rows written before it are cleaned by each app's `*_name_refuses_control_characters` migration."""
    from django.apps import apps as registry
    from django.core.exceptions import ValidationError

    from apps.agents.models import Agent
    from apps.core.validators import clean_stored_names

    org.name = "Acme\u202egnp.exe"
    with pytest.raises(ValidationError) as refused:
        org.full_clean()
    assert "U+202E" in refused.value.message_dict["name"][0]
    org.name = "Acme\u2028Inc"  # a line separator breaks a line as a newline does
    with pytest.raises(ValidationError):
        org.full_clean()
    agent = Agent.objects.create(organization=org, name="Echo", slug="echo", url="https://echo.example.com/")
    Organization.objects.filter(pk=org.pk).update(name="Acme\u202egnp.exe")
    type(alice).objects.filter(pk=alice.pk).update(name="Alice\nSmith\u2066\u2029")
    Agent.objects.for_org(org).filter(pk=agent.pk).update(name="\x07\u202e")
    for label, model in (("orgs", "Organization"), ("accounts", "User"), ("agents", "Agent"), ("orgs", "APIKey")):
        clean_stored_names(label, model)(registry, None)
    assert Organization.objects.get(pk=org.pk).name == "Acmegnp.exe"
    assert type(alice).objects.get(pk=alice.pk).name == "Alice Smith"
    assert Agent.objects.for_org(org).get(pk=agent.pk).name == "unnamed"  # nothing left of it, and a name is required


def test_update_and_delete_org(org: Any, alice: Any, bob: Any, client_for: Any) -> None:
    admin, owner = client_for(bob), client_for(alice)
    renamed = owner.patch("/api/v1/orgs/acme", {"slug": "acme-2"}, format="json")  # was a 200 that changed nothing
    assert renamed.status_code == 400 and "slug" in renamed.data["error"]["details"]
    assert admin.patch("/api/v1/orgs/acme", {"name": "Acme Inc"}, format="json").data["name"] == "Acme Inc"
    refused = admin.patch("/api/v1/orgs/acme", {"plan": "team"}, format="json")
    assert refused.status_code == 403 and refused.data["error"]["details"]["required_action"] == "org:billing"
    assert owner.patch("/api/v1/orgs/acme", {"plan": "team"}, format="json").data["plan"] == "team"
    assert owner.patch("/api/v1/orgs/acme", {"plan": "gold"}, format="json").status_code == 400
    nothing = owner.patch("/api/v1/orgs/acme", {}, format="json")
    assert nothing.status_code == 400
    assert nothing.data["error"]["details"] == {"non_field_errors": ["Nothing to change: give any of `name`, `plan`."]}
    assert admin.delete("/api/v1/orgs/acme").status_code == 403
    assert owner.delete("/api/v1/orgs/acme").status_code == 204
    assert not Organization.objects.filter(slug="acme").exists()


def test_a_key_renames_with_org_admin_alone_and_each_field_needs_its_scope(org: Any, alice: Any) -> None:
    from tests.factories import issue_api_key, key_client

    admin_key = key_client(issue_api_key(alice, org, scopes=["org:admin"])[1])
    assert admin_key.patch("/api/v1/orgs/acme", {"name": "Acme 2"}, format="json").data["name"] == "Acme 2"
    reader = key_client(issue_api_key(alice, org, scopes=["org:read"])[1])
    # Naming the plan it already has used to be a 200 for a read-only key: the field is checked, not the change.
    refused = reader.patch("/api/v1/orgs/acme", {"name": "Acme 2"}, format="json")
    assert refused.status_code == 403 and refused.data["error"]["details"]["required_scope"] == "org:admin"
    # The scope comes before the body, as for every other write: it was a 400 for the unknown field first.
    for body in ({"typo": 1}, {}, [1]):
        refused = reader.patch("/api/v1/orgs/acme", body, format="json")
        assert refused.status_code == 403 and refused.data["error"]["details"]["required_scope"] == "org:admin"
    assert admin_key.patch("/api/v1/orgs/acme", {"typo": 1}, format="json").status_code == 400
    plan = admin_key.patch("/api/v1/orgs/acme", {"plan": "team", "typo": 1}, format="json")
    assert plan.status_code == 403 and plan.data["error"]["code"] == "session_required"


def test_orgs_i_do_not_belong_to_are_404(org: Any, alice: Any, other_org: Any, client_for: Any) -> None:
    client = client_for(alice)
    assert client.get("/api/v1/orgs/globex").status_code == 404
    assert client.patch("/api/v1/orgs/globex", {"name": "x"}, format="json").status_code == 404
    assert client.delete("/api/v1/orgs/globex").status_code == 404
    assert client.get("/api/v1/orgs/no-such-org").status_code == 404


# --- Members -----------------------------------------------------------------------------------------------------


def test_members_list_and_role_change(
    org: Any, alice: Any, bob: Any, dave: Any, mia: Any, client_for: Any, django_assert_num_queries: Any
) -> None:
    client = client_for(alice)
    client.get("/api/v1/members")  # warm the session
    # Pinned: session + user + memberships (org resolution) + the page of members with their users.
    with django_assert_num_queries(4):
        response = client.get("/api/v1/members")
    assert {row["user"]["email"] for row in response.data["results"]} == {
        "alice@acme.test",
        "bob@acme.test",
        "dave@acme.test",
        "mia@acme.test",
    }
    mias = Membership.objects.for_org(org).get(user=mia)
    changed = client.patch(f"/api/v1/members/{mias.pk}", {"role": "developer"}, format="json")
    assert changed.status_code == 200 and changed.data["role"] == "developer"
    assert client.patch(f"/api/v1/members/{mias.pk}", {"role": "king"}, format="json").status_code == 400
    refused = client_for(bob).patch(f"/api/v1/members/{mias.pk}", {"role": "admin"}, format="json")
    assert refused.status_code == 403
    alices = Membership.objects.for_org(org).get(user=alice)
    last = client.patch(f"/api/v1/members/{alices.pk}", {"role": "admin"}, format="json")
    assert last.status_code == 409 and last.data["error"]["code"] == "last_owner"


def test_member_removal_rules(org: Any, alice: Any, bob: Any, dave: Any, mia: Any, client_for: Any) -> None:
    ids = {m.user.email: m.pk for m in Membership.objects.for_org(org).select_related("user")}
    assert client_for(bob).delete(f"/api/v1/members/{ids['alice@acme.test']}").status_code == 403
    assert client_for(dave).delete(f"/api/v1/members/{ids['mia@acme.test']}").status_code == 403
    assert client_for(bob).delete(f"/api/v1/members/{ids['mia@acme.test']}").status_code == 204
    assert client_for(dave).delete(f"/api/v1/members/{ids['dave@acme.test']}").status_code == 204  # leaves
    last = client_for(alice).delete(f"/api/v1/members/{ids['alice@acme.test']}")
    assert last.status_code == 409 and last.data["error"]["code"] == "last_owner"


def test_a_key_with_org_admin_alone_removes_members(org: Any, alice: Any, bob: Any, dave: Any, mia: Any) -> None:
    # It was refused for lacking `org:read`, the scope a session's leaving needs.
    ids = {m.user.email: m.pk for m in Membership.objects.for_org(org).select_related("user")}
    admin_key = key_client(issue_api_key(alice, org, scopes=["org:admin"])[1])
    assert admin_key.delete(f"/api/v1/members/{ids['mia@acme.test']}").status_code == 204
    reader = key_client(issue_api_key(alice, org, scopes=["org:read", "tasks:write"])[1])
    refused = reader.delete(f"/api/v1/members/{ids['dave@acme.test']}")
    assert refused.status_code == 403 and refused.data["error"]["details"]["required_scope"] == "org:admin"
    assert Membership.objects.for_org(org).filter(pk=ids["dave@acme.test"]).exists()


def test_session_only_operations_refuse_every_key_and_say_so_in_the_schema(
    org: Any, alice: Any, client_for: Any
) -> None:
    # Their auth line said "API key (any scope) or session".
    schema = client_for(alice).get("/api/v1/schema/?format=json").json()
    everything = ["org:read", "org:admin", "tasks:read", "tasks:write", "agents:read", "agents:write"]
    client = key_client(issue_api_key(alice, org, scopes=everything)[1])
    expected = {
        ("post", "/api/v1/auth/password/change"): "Change passwords with a signed-in session, not an API key.",
        ("post", "/api/v1/invitations/accept"): "Accept invitations with a signed-in session.",
        ("post", "/api/v1/orgs"): "An API key acts for one org; create organizations with a signed-in session.",
    }
    session_only = {
        (method, path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("description", "").startswith("**Auth:** session only (any API key")
    }
    assert session_only == set(expected)
    for (method, path), message in expected.items():
        refused = client.post(path, {}, format="json")
        assert refused.status_code == 403 and refused.json()["error"]["message"] == message
        assert _error_is_documented(schema, method, path, refused) == "session_required"


def test_a_key_cannot_make_its_creator_leave(org: Any, alice: Any, bob: Any) -> None:
    _, plaintext = issue_api_key(bob, org, scopes=["org:read"])
    bobs = Membership.objects.for_org(org).get(user=bob)
    response = key_client(plaintext).delete(f"/api/v1/members/{bobs.pk}")
    assert response.status_code == 403 and response.data["error"]["code"] == "missing_scope"
    assert Membership.objects.for_org(org).filter(user=bob).exists()


# --- Invitations -------------------------------------------------------------------------------------------------


def _token_from_mail() -> str:
    match = re.search(r"/invitations/([\w-]+)/", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


def test_invite_and_accept(
    org: Any, alice: Any, bob: Any, client_for: Any, django_capture_on_commit_callbacks: Any, eager_celery: None
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            "/api/v1/invitations", {"email": "nina@example.test", "role": "developer"}, format="json"
        )
    assert response.status_code == 201 and response.data["state"] == "pending"
    assert "token" not in response.data
    token = _token_from_mail()
    nina = UserFactory(email="nina@example.test")
    accepted = client_for(nina).post("/api/v1/invitations/accept", {"token": token}, format="json")
    assert accepted.status_code == 201 and accepted.data["role"] == "developer"
    assert Membership.objects.for_org(org).filter(user=nina, role="developer").exists()
    again = client_for(nina).post("/api/v1/invitations/accept", {"token": token}, format="json")
    assert again.status_code == 409
    unknown = client_for(nina).post("/api/v1/invitations/accept", {"token": "nope"}, format="json")
    assert unknown.status_code == 404


def test_an_admin_demoted_or_removed_takes_back_the_invitations_they_could_no_longer_send(
    org: Any, alice: Any, bob: Any, client_for: Any
) -> None:
    # Accepted later, they still granted their role: an admin demoted (or removed) could let in, as an admin, an
    # address they control.
    owner, admin = client_for(alice), client_for(bob)
    sent = {
        email: admin.post("/api/v1/invitations", {"email": email, "role": role}, format="json").data["id"]
        for email, role in (("frank@evil.test", "admin"), ("gina@evil.test", "member"))
    }
    owners_invite = owner.post("/api/v1/invitations", {"email": "olga@x.test", "role": "owner"}, format="json").data
    bob_membership = Membership.objects.for_org(org).get(user=bob)
    assert owner.patch(f"/api/v1/members/{bob_membership.pk}", {"role": "member"}, format="json").status_code == 200
    states = {row["id"]: row["state"] for row in owner.get("/api/v1/invitations").data["results"]}
    assert states[sent["frank@evil.test"]] == states[sent["gina@evil.test"]] == "revoked"
    assert states[owners_invite["id"]] == "pending"  # the owner's own stay
    reasons = AuditEvent.objects.filter(action="invitation.revoked", target_id__in=[str(i) for i in sent.values()])
    assert {row.details["reason"] for row in reasons} == {"its sender is now member"}
    # An owner demoted to admin keeps what an admin may send, not owner invitations.
    carol = UserFactory(email="carol@acme.test")
    Membership.objects.create(organization=org, user=carol, role="owner")
    by_carol = client_for(carol)
    as_owner = by_carol.post("/api/v1/invitations", {"email": "p@x.test", "role": "owner"}, format="json").data
    as_admin = by_carol.post("/api/v1/invitations", {"email": "q@x.test", "role": "admin"}, format="json").data
    carol_membership = Membership.objects.for_org(org).get(user=carol)
    assert by_carol.patch(f"/api/v1/members/{carol_membership.pk}", {"role": "admin"}, format="json").status_code == 200
    states = {row["id"]: row["state"] for row in owner.get("/api/v1/invitations").data["results"]}
    assert (states[as_owner["id"]], states[as_admin["id"]]) == ("revoked", "pending")
    # Removed: nothing they sent stays open.
    assert owner.delete(f"/api/v1/members/{carol_membership.pk}").status_code == 204
    assert Invitation.objects.for_org(org).get(pk=as_admin["id"]).state() == "revoked"


def test_invitations_are_idempotent(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    body = {"email": "omar@example.test", "role": "member"}
    first = client.post("/api/v1/invitations", body, format="json", HTTP_IDEMPOTENCY_KEY="inv-1")
    second = client.post("/api/v1/invitations", body, format="json", HTTP_IDEMPOTENCY_KEY="inv-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() and second["Idempotent-Replayed"] == "true"
    assert Invitation.objects.for_org(org).count() == 1
    conflict = client.post(
        "/api/v1/invitations", {**body, "role": "admin"}, format="json", HTTP_IDEMPOTENCY_KEY="inv-1"
    )
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"


def test_revoke_invitation(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    created = client.post("/api/v1/invitations", {"email": "x@example.test"}, format="json")
    revoked = client.post(f"/api/v1/invitations/{created.data['id']}/revoke")
    assert revoked.status_code == 200 and revoked.data["state"] == "revoked"
    assert client.get("/api/v1/invitations").data["results"][0]["state"] == "revoked"


def test_reinviting_audits_the_replaced_invitation_and_revoking_it_says_replaced(
    org: Any, alice: Any, client_for: Any
) -> None:
    client = client_for(alice)
    first = client.post("/api/v1/invitations", {"email": "x@example.test"}, format="json")
    second = client.post("/api/v1/invitations", {"email": "x@example.test", "role": "admin"}, format="json")
    assert first.status_code == second.status_code == 201
    # The first invitation's link stopped working: the trail says so, and why.
    revoked = AuditEvent.objects.get(org_id=org.pk, action="invitation.revoked")
    assert revoked.target_id == str(first.data["id"]) and revoked.actor == alice
    assert revoked.details == {
        "email": "x@example.test",
        "reason": "replaced by a new invitation",
        "replaced_by": second.data["id"],
    }
    # Revoking it is still a 409 `invitation_closed`, but it says it was replaced (not "already revoked").
    again = client.post(f"/api/v1/invitations/{first.data['id']}/revoke")
    assert again.status_code == 409 and again.data["error"]["code"] == "invitation_closed"
    assert again.data["error"]["message"] == (
        f"This invitation was replaced by a newer invitation to x@example.test (id {second.data['id']}); "
        "revoke that one instead."
    )
    assert again.data["error"]["details"] == {"replaced_by": second.data["id"]}
    # One an admin revoked is "already revoked", as before.
    assert client.post(f"/api/v1/invitations/{second.data['id']}/revoke").status_code == 200
    closed = client.post(f"/api/v1/invitations/{second.data['id']}/revoke")
    assert closed.status_code == 409 and closed.data["error"]["message"] == "This invitation is already revoked."


def test_invitations_filter_by_state_and_refuse_unknown_states(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    ids = {
        email: client.post("/api/v1/invitations", {"email": email}, format="json").data["id"]
        for email in ("pending@example.test", "revoked@example.test", "expired@example.test")
    }
    client.post(f"/api/v1/invitations/{ids['revoked@example.test']}/revoke")
    Invitation.objects.for_org(org).filter(pk=ids["expired@example.test"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    def listed(query: str) -> set[str]:
        response = client.get(f"/api/v1/invitations{query}")
        assert response.status_code == 200, response.data
        return {row["email"] for row in response.data["results"]}

    assert listed("?state=pending") == {"pending@example.test"}
    assert listed("?state=revoked&state=expired") == {"revoked@example.test", "expired@example.test"}
    assert listed("?state=accepted") == set()
    assert len(listed("")) == 3
    # An unknown state was ignored (the whole list, as if it matched): a 400 naming the accepted ones.
    bogus = client.get("/api/v1/invitations?state=bogus")
    assert bogus.status_code == 400 and bogus.data["error"]["code"] == "invalid"
    assert bogus.data["error"]["message"] == "'state' must be one of: pending, accepted, revoked, expired."
    assert bogus.data["error"]["details"] == {
        "state": ["Unknown state bogus: one of pending, accepted, revoked, expired."]
    }
    # Reading one by id is not filtered: `state` is no parameter of it, and is refused rather than ignored.
    one = f"/api/v1/invitations/{ids['revoked@example.test']}"
    assert client.get(one).status_code == 200
    refused = client.get(f"{one}?state=pending")
    assert refused.status_code == 400 and list(refused.data["error"]["details"]) == ["state"]


# --- /me and the org a session acts for ----------------------------------------------------------------------


def test_a_session_without_a_chosen_org_acts_for_its_oldest_membership_whatever_the_names(
    org: Any, alice: Any, other_org: Any, client_for: Any
) -> None:
    # alice joined Acme first, Globex later. The first org by name agreed until Acme was renamed "Zenith": then the
    # same session silently acted for Globex.
    MembershipFactory(organization=other_org, user=alice, role="member")
    client = client_for(alice)  # an API caller: signed in, never opened a console page, no X-Hermes-Org
    assert client.get("/api/v1/me").data["current"]["org"] == "acme"
    Organization.objects.filter(pk=org.pk).update(name="Zenith")
    assert client.get("/api/v1/me").data["current"]["org"] == "acme"
    assert client.get("/api/v1/orgs/acme").status_code == 200
    # The header still picks any of them.
    assert client.get("/api/v1/me", HTTP_X_HERMES_ORG="globex").data["current"]["org"] == "globex"


def test_a_session_acts_for_the_org_joined_first_even_when_its_name_sorts_last(org: Any, client_for: Any) -> None:
    zeta = Organization.objects.create(name="Zeta", slug="zeta")
    early = UserFactory(email="early@example.test")
    MembershipFactory(organization=zeta, user=early, role="member")
    MembershipFactory(organization=org, user=early, role="member")
    assert client_for(early).get("/api/v1/me").data["current"]["org"] == "zeta"


def test_me_with_a_key_shows_only_the_keys_org(org: Any, alice: Any, other_org: Any, client_for: Any) -> None:
    MembershipFactory(organization=other_org, user=alice, role="member")
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    by_key = key_client(plaintext).get("/api/v1/me")
    assert by_key.status_code == 200
    assert by_key.data["memberships"] == [{"org": "acme", "org_name": "Acme", "role": "owner"}]
    assert by_key.data["current"]["org"] == "acme" and by_key.data["current"]["via"] == "api_key"
    # A session still lists every org of the person.
    by_session = client_for(alice).get("/api/v1/me")
    assert {row["org"] for row in by_session.data["memberships"]} == {"acme", "globex"}


# --- Bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/orgs", '{"name": "x", "slug": '),
        ("/api/v1/invitations", "{not json}"),
        ("/api/v1/keys", '["a list"'),
    ],
)
def test_malformed_json_is_a_400_and_writes_nothing(org: Any, alice: Any, client_for: Any, url: str, body: str) -> None:
    client = client_for(alice)
    before = (AuditEvent.objects.count(), Organization.objects.count())
    response = client.generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert (AuditEvent.objects.count(), Organization.objects.count()) == before


def test_invalid_fields_are_per_field_400s(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    response = client.post(
        "/api/v1/keys", {"name": "", "scopes": ["tasks:fly"], "rate_limit_per_minute": 0}, format="json"
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert set(details) == {"name", "scopes", "rate_limit_per_minute"}
    for huge in (12_001, 2**63, 10**20):  # 2**63 and above were a 500 (OverflowError) writing the row
        response = client.post(
            "/api/v1/keys", {"name": "k", "scopes": ["tasks:read"], "rate_limit_per_minute": huge}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"]["details"] == {
            "rate_limit_per_minute": ["Ensure this value is less than or equal to 12000."]
        }
    invite = client.post("/api/v1/invitations", {"email": "not-an-email", "role": "king"}, format="json")
    assert set(invite.json()["error"]["details"]) == {"email", "role"}
    assert AuditEvent.objects.filter(action__in=["api_key.created", "invitation.created"]).count() == 0


def test_no_org_selected_is_explained(client_for: Any) -> None:
    loner = UserFactory(email="loner@example.test")
    response = client_for(loner).get("/api/v1/members")
    assert response.status_code == 403 and response.data["error"]["code"] == "no_organization"
    assert client_for(loner).get("/api/v1/me").data["current"] is None


def test_an_org_header_naming_an_org_you_are_not_in_says_so(alice: Any, client_for: Any, other_org: Any) -> None:
    for slug in ("globex", "no-such-org"):  # another org's, and none at all: the same answer
        response = client_for(alice).get("/api/v1/members", HTTP_X_HERMES_ORG=slug)
        assert response.status_code == 403
        assert response.data["error"]["message"] == (
            f"You are not a member of an organization '{slug}' (X-Hermes-Org); GET /api/v1/orgs lists yours."
        )


# --- Schema ------------------------------------------------------------------------------------------------------


def test_schema_describes_auth_for_every_operation(client_for: Any, alice: Any) -> None:
    response = client_for(alice).get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert {"apiKey", "session"} <= set(schema["components"]["securitySchemes"])
    missing = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "**Auth:**" not in operation.get("description", "")
    ]
    assert not missing, f"describe these operations with apps.core.api.describe(...): {missing}"


def _error_is_documented(schema: dict[str, Any], method: str, path: str, response: Any) -> str:
    """The response's error code, asserted to be named in the description its operation declares for its status."""
    code = str(response.json()["error"]["code"])
    declared = schema["paths"][path][method]["responses"].get(str(response.status_code), {})
    assert f"`{code}`" in declared.get("description", ""), (method, path, response.status_code, code, declared)
    return code


def test_the_session_required_refusals_of_members_and_invitations_are_declared(
    org: Any, alice: Any, bob: Any, client_for: Any
) -> None:
    schema = client_for(alice).get("/api/v1/schema/?format=json").json()
    _, plaintext = issue_api_key(alice, org, scopes=["org:admin", "org:read"])
    client = key_client(plaintext)
    owner = MembershipFactory(organization=org, user=UserFactory(email="olga@acme.test"), role="owner")
    responses = {
        ("post", "/api/v1/invitations"): client.post(
            "/api/v1/invitations", {"email": "new@acme.test", "role": "owner"}, format="json"
        ),
        ("delete", "/api/v1/members/{id}"): client.delete(f"/api/v1/members/{owner.pk}"),
        ("patch", "/api/v1/orgs/{slug}"): client.patch("/api/v1/orgs/acme", {"plan": "team"}, format="json"),
    }
    for (method, path), response in responses.items():
        assert response.status_code == 403, (method, path, response.content)
        assert _error_is_documented(schema, method, path, response) == "session_required"
    # The same requests from an admin's session are role refusals, declared too.
    session = client_for(bob)
    invite = session.post("/api/v1/invitations", {"email": "new@acme.test", "role": "owner"}, format="json")
    assert _error_is_documented(schema, "post", "/api/v1/invitations", invite) == "role_forbidden"
    remove = session.delete(f"/api/v1/members/{owner.pk}")
    assert _error_is_documented(schema, "delete", "/api/v1/members/{id}", remove) == "role_forbidden"
    assert Membership.objects.for_org(org).filter(pk=owner.pk).exists()
    assert not Invitation.objects.for_org(org).exists()


def test_schema_generates_without_warnings_and_validates(tmp_path: Any) -> None:
    # What a client generator reads: an unresolvable serializer or a path parameter without a type is a warning
    # here long before it is a broken SDK somewhere else.
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert (tmp_path / "schema.yml").read_text().count("operationId:") >= 60
