"""Every cell of the role matrix, through the API, for a session and for an API key.

For each (role, action) a probe request that needs exactly that action is sent as the person with that role
(alice owner, bob admin, dave developer, mia member), and once more through an API key that person created with
every scope their role allows. Allowed cells must not be a 403; refused cells must be a 403 that names the
missing scope (key) or the role (session). PROBES must cover every action in apps.core.permissions.ACTIONS:
a new action without a probe fails `test_every_action_has_a_probe`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.core.permissions import ACTIONS, SCOPES, Role, role_allows
from apps.orgs.models import Membership
from tests.factories import issue_api_key, key_client
from tests.matrix_urls import PROBED_ACTIONS


@dataclass(frozen=True)
class Probe:
    send: Callable[[APIClient, dict[str, Any]], Any]
    key_action: str | None = None  # what the same request needs through a key, when that differs


def _mia_membership(ctx: dict[str, Any]) -> int:
    return int(Membership.objects.for_org(ctx["org"]).get(user=ctx["mia"]).pk)


PROBES: dict[str, Probe] = {
    **{
        action: Probe(lambda client, ctx, action=action: client.get(f"/probe/{action}"))  # type: ignore[misc]
        for action in PROBED_ACTIONS
    },
    "org:read": Probe(lambda client, ctx: client.get("/api/v1/members")),
    "org:admin": Probe(lambda client, ctx: client.get("/api/v1/invitations")),
    "org:audit": Probe(lambda client, ctx: client.get("/api/v1/audit")),
    "org:roles": Probe(
        lambda client, ctx: client.patch(f"/api/v1/members/{_mia_membership(ctx)}", {"role": "member"}, format="json")
    ),
    "org:billing": Probe(lambda client, ctx: client.patch("/api/v1/orgs/acme", {"plan": "team"}, format="json")),
    "org:delete": Probe(lambda client, ctx: client.delete("/api/v1/orgs/acme")),
    # Through a key, managing keys is `org:admin` (`keys:own` is a person's right, never a scope).
    "keys:own": Probe(
        lambda client, ctx: client.post("/api/v1/keys", {"name": "probe", "scopes": ["tasks:read"]}, format="json"),
        key_action="org:admin",
    ),
}


def _key_with_every_scope_of(role: Role, user: Any, org: Any) -> str:
    """A key carrying every scope `role` allows. Members cannot create keys, so mia's key is made while she is a
    developer and she is then demoted: the key acts with its creator's current role (member)."""
    scopes = sorted(s for s in SCOPES if role_allows(role, s))
    if role != Role.MEMBER:
        return issue_api_key(user, org, scopes=scopes)[1]
    memberships = Membership.objects.for_org(org).filter(user=user)
    memberships.update(role=Role.DEVELOPER)
    plaintext = issue_api_key(user, org, scopes=scopes)[1]
    memberships.update(role=Role.MEMBER)
    return plaintext


USERS = {Role.OWNER: "alice", Role.ADMIN: "bob", Role.DEVELOPER: "dave", Role.MEMBER: "mia"}


def test_every_action_has_a_probe() -> None:
    missing = sorted(set(ACTIONS) - set(PROBES))
    assert not missing, f"add a probe request for {missing} to PROBES in tests/test_role_matrix.py"


@pytest.mark.django_db
@pytest.mark.urls("tests.matrix_urls")
@pytest.mark.parametrize("via", ["session", "key"])
@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("role", list(Role))
def test_matrix_cell(
    role: Role, action: str, via: str, org: Any, alice: Any, bob: Any, dave: Any, mia: Any, client_for: Any
) -> None:
    ctx = {"org": org, "alice": alice, "bob": bob, "dave": dave, "mia": mia}
    user = ctx[USERS[role]]
    probe = PROBES[action]
    if via == "session":
        client = client_for(user)
        needed = action
        allowed = role_allows(role, action)
    else:
        plaintext = _key_with_every_scope_of(role, user, org)
        client = key_client(plaintext)
        needed = probe.key_action or action
        allowed = needed in SCOPES and role_allows(role, needed)
    response = probe.send(client, ctx)
    if allowed:
        assert response.status_code < 400, (role, action, via, response.status_code, response.content)
    else:
        assert response.status_code == 403, (role, action, via, response.status_code, response.content)
        error = response.json()["error"]
        if via == "key" and needed not in SCOPES:  # no key can hold it: the refusal says a session is needed
            assert error == {
                "code": "session_required",
                "message": f"'{needed}' is done with a signed-in session (the console, or the API with its session "
                "cookie): it is not an API-key scope.",
                "details": {"required_action": needed},
            }
        elif via == "key":
            assert error == {
                "code": "missing_scope",
                "message": f"This API key lacks the scope '{needed}'.",
                "details": {"required_scope": needed},
            }
        else:
            assert error["code"] == "role_forbidden"
            assert error["details"] == {"required_action": action, "role": role.value}
