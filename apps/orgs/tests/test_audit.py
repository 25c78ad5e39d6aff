"""GET /api/v1/audit: the org's audit trail for admins and owners (`org:audit`), never another org's rows."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.audit import record
from apps.core.permissions import Access, Role
from apps.orgs import actions as org_actions
from apps.orgs.models import Membership
from tests.factories import access_for, issue_api_key, key_client

pytestmark = pytest.mark.django_db


def _steps(org: Any, user: Any, count: int, *, keys: tuple[Any, ...] = (), action: str = "probe.step") -> None:
    """`count` events in `org`, alternating between the people's session and `keys` (when given)."""
    for step in range(count):
        key = keys[step % len(keys)] if keys and step % 2 else None
        record(action, access=Access(org=org, role=Role.OWNER, user=user, api_key=key), target=org, step=step)


def test_the_log_shows_who_did_what_newest_first(client_for: Any, org: Any, alice: Any, bob: Any) -> None:
    key, plaintext = issue_api_key(bob, org, scopes=["org:admin"], name="ci")
    org_actions.invite_member(access=access_for(alice, org), email="zoe@example.test", role="member")
    assert key_client(plaintext).post("/api/v1/invitations", {"email": "yan@example.test"}, format="json").status_code
    body = client_for(alice).get("/api/v1/audit").json()
    rows = body["results"]
    assert [row["action"] for row in rows] == ["invitation.created", "invitation.created", "api_key.created"]
    by_key, by_person, issued = rows
    assert by_key["actor"] == {"id": bob.pk, "email": "bob@acme.test", "name": bob.name}
    assert by_key["api_key"] == {"id": key.pk, "name": "ci", "display": key.display}
    assert by_key["details"] == {"email": "yan@example.test", "role": "member"}
    assert by_key["target_type"] == "invitation" and by_key["target_id"]
    assert by_person["actor"]["email"] == "alice@acme.test" and by_person["api_key"] is None
    assert issued["target_type"] == "apikey" and issued["target_id"] == str(key.pk)
    assert issued["details"] == {"name": "ci", "scopes": ["org:admin"]}
    assert body["next"] is None and by_key["created_at"] >= by_person["created_at"]


def test_filter_by_action_repeatable(client_for: Any, org: Any, alice: Any) -> None:
    _steps(org, alice, 3, action="task.created")
    _steps(org, alice, 2, action="task.canceled")
    _steps(org, alice, 1, action="agent.registered")
    client = client_for(alice)

    def actions(query: str) -> list[str]:
        response = client.get(f"/api/v1/audit{query}")
        assert response.status_code == 200
        return [row["action"] for row in response.json()["results"]]

    assert actions("?action=task.canceled") == ["task.canceled"] * 2
    assert (
        sorted(actions("?action=task.canceled&action=agent.registered")) == ["agent.registered"] + ["task.canceled"] * 2
    )
    assert actions("?action=") == actions("")  # empty: no filter
    assert actions("?action=no.such.action") == []  # an open list: nothing matches, nothing refused


def test_cursor_pagination(client_for: Any, org: Any, alice: Any) -> None:
    _steps(org, alice, 60)
    client = client_for(alice)
    first = client.get("/api/v1/audit?action=probe.step").json()
    assert len(first["results"]) == 50 and first["next"] and first["previous"] is None
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 10 and second["next"] is None
    steps = [row["details"]["step"] for row in first["results"] + second["results"]]
    assert steps == list(reversed(range(60)))  # newest first, no row twice, none skipped
    assert len(client.get("/api/v1/audit?action=probe.step&page_size=7").json()["results"]) == 7
    bad = client.get("/api/v1/audit?cursor=nope")
    assert bad.status_code == 400 and bad.json()["error"]["details"] == {"cursor": ["Invalid cursor."]}


@pytest.mark.parametrize(
    ("who", "role"), [("alice", None), ("bob", None), ("dave", Role.DEVELOPER), ("mia", Role.MEMBER)]
)
def test_sessions_by_role(
    client_for: Any, alice: Any, bob: Any, dave: Any, mia: Any, who: str, role: Role | None
) -> None:
    people = {"alice": alice, "bob": bob, "dave": dave, "mia": mia}
    response = client_for(people[who]).get("/api/v1/audit")
    if role is None:  # admins and owners read it
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "role_forbidden"
        assert error["details"] == {"required_action": "org:audit", "role": role.value}
        assert (
            "may not read the organization's audit log (org:audit); that takes an Owner or Admin." in (error["message"])
        )


def test_keys_need_the_scope_and_a_role_that_may_read(org: Any, alice: Any, bob: Any) -> None:
    _, admin_only = issue_api_key(alice, org, scopes=["org:admin", "org:read"])
    refused = key_client(admin_only).get("/api/v1/audit")
    assert refused.status_code == 403 and refused.json()["error"] == {
        "code": "missing_scope",
        "message": "This API key lacks the scope 'org:audit'.",
        "details": {"required_scope": "org:audit"},
    }
    _, reader = issue_api_key(bob, org, scopes=["org:audit"])
    assert key_client(reader).get("/api/v1/audit").status_code == 200
    # A key acts with its creator's role today: bob demoted to developer, his key may no longer read the log.
    Membership.objects.for_org(org).filter(user=bob).update(role=Role.DEVELOPER)
    demoted = key_client(reader).get("/api/v1/audit")
    assert demoted.status_code == 403 and demoted.json()["error"]["code"] == "role_forbidden"


def test_only_the_callers_org(client_for: Any, org: Any, other_org: Any, alice: Any, charlie: Any, api: Any) -> None:
    _steps(org, alice, 2, action="acme.step")
    _steps(other_org, charlie, 2, action="globex.step")
    record("user.password_changed", actor=alice, target=alice)  # a person's own account: in no org's trail
    for client, own, foreign in (
        (client_for(alice), "acme.step", "globex.step"),
        (client_for(charlie), "globex.step", "acme.step"),
        (key_client(issue_api_key(charlie, other_org)[1]), "globex.step", "acme.step"),
    ):
        seen = {row["action"] for row in client.get("/api/v1/audit").json()["results"]}
        assert own in seen and foreign not in seen and "user.password_changed" not in seen
        assert client.get(f"/api/v1/audit?action={foreign}").json()["results"] == []
    # X-Hermes-Org naming an org alice is not in is refused, not answered with that org's trail.
    other = client_for(alice).get("/api/v1/audit", HTTP_X_HERMES_ORG="globex")
    assert other.status_code == 403 and other.json()["error"]["code"] == "no_organization"
    assert api.get("/api/v1/audit").status_code == 401


def test_a_page_of_50_takes_a_fixed_number_of_queries(
    org: Any, alice: Any, bob: Any, django_assert_num_queries: Any
) -> None:
    keys = tuple(issue_api_key(person, org, scopes=["org:audit"])[0] for person in (alice, bob, alice))
    _, plaintext = issue_api_key(alice, org, scopes=["org:audit"])
    _steps(org, alice, 30, keys=keys)
    _steps(org, bob, 30, keys=keys)
    client = key_client(plaintext)
    client.get("/api/v1/audit")
    # the key with its org, creator and role; the page with each actor joined; the page's API keys in one query
    with django_assert_num_queries(3):
        response = client.get("/api/v1/audit")
    rows = response.json()["results"]
    assert len(rows) == 50 and {row["api_key"]["id"] for row in rows if row["api_key"]} == {k.pk for k in keys}
    assert {row["actor"]["email"] for row in rows} == {"alice@acme.test", "bob@acme.test"}


def test_an_action_longer_than_any_is_refused(client_for: Any, alice: Any) -> None:
    response = client_for(alice).get("/api/v1/audit", {"action": ["task.created", "x" * 81]})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"action": ["At most 80 characters."]}
