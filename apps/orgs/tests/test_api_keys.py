"""API keys: digest-only storage, authentication outcomes, scopes bounded by the creator, rotation, revocation,
last-used throttling, and WebSocket authentication."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from apps.core.models import AuditEvent
from apps.core.permissions import Role
from apps.orgs.models import APIKey, Membership
from tests.factories import issue_api_key, key_client

pytestmark = pytest.mark.django_db


def test_the_database_never_holds_a_usable_key(org: Any, alice: Any) -> None:
    key, plaintext = issue_api_key(alice, org, name="ci")
    assert plaintext.startswith("hrm_") and len(plaintext) == 47
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM orgs_apikey")
        dump = repr(cursor.fetchall())
    secret_part = plaintext[len("hrm_") :]
    assert plaintext not in dump
    # Not even the secret's middle is stored: only the 4-char display prefix and the last four.
    assert secret_part[4:-4] not in dump
    assert key.display == f"{plaintext[:8]}…{plaintext[-4:]}"
    # The stored digest is not itself a key.
    assert key_client(key.digest).get("/api/v1/me").status_code == 401
    assert key_client(plaintext).get("/api/v1/me").status_code == 200


def test_a_key_acts_for_its_org_with_the_creators_current_role(org: Any, alice: Any, bob: Any) -> None:
    _, plaintext = issue_api_key(bob, org, scopes=["org:read", "org:admin"])
    response = key_client(plaintext).get("/api/v1/me")
    assert response.status_code == 200
    assert response.data["email"] == bob.email
    assert response.data["current"]["role"] == "admin"
    assert response.data["current"]["via"] == "api_key"
    assert response.data["current"]["scopes"] == ["org:admin", "org:read"]
    assert key_client(plaintext).get("/api/v1/keys").status_code == 200
    # Demote bob: the key still authenticates but may no longer manage keys (its creator's role today).
    Membership.objects.for_org(org).filter(user=bob).update(role=Role.MEMBER)
    response = key_client(plaintext).get("/api/v1/keys")
    assert response.status_code == 403
    assert response.data["error"]["code"] == "role_forbidden"


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("unknown", "key_unknown"),
        ("malformed", "key_malformed"),
        ("expired", "key_expired"),
        ("revoked", "key_revoked"),
        ("creator_removed", "key_creator_gone"),
        ("creator_removed_then_back", "key_creator_gone"),
        ("creator_inactive", "key_creator_gone"),
    ],
)
def test_bad_keys_are_401s_that_say_why(org: Any, alice: Any, bob: Any, setup: str, code: str) -> None:
    key, plaintext = issue_api_key(bob, org, scopes=["org:read"])
    if setup == "unknown":
        plaintext = "hrm_" + "x" * 43
    elif setup == "malformed":
        plaintext = "hrm_short"
    elif setup == "expired":
        APIKey.objects.for_org(org).filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif setup == "revoked":
        APIKey.objects.for_org(org).filter(pk=key.pk).update(revoked_at=timezone.now())
    elif setup == "creator_removed":
        Membership.objects.for_org(org).filter(user=bob).delete()
    elif setup == "creator_removed_then_back":
        # Invited back later: the keys of the earlier membership do not come back to life (rotate them).
        Membership.objects.for_org(org).filter(user=bob).delete()
        Membership.objects.create(organization=org, user=bob, role=Role.ADMIN)
    elif setup == "creator_inactive":
        type(bob).objects.filter(pk=bob.pk).update(is_active=False)
    before = AuditEvent.objects.count()
    response = key_client(plaintext).get("/api/v1/me")
    assert response.status_code == 401
    assert response.data["error"]["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert AuditEvent.objects.count() == before


def test_anonymous_api_requests_are_401_with_a_bearer_challenge(api: Any) -> None:
    response = api.get("/api/v1/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="hermes"'
    assert response.data["error"] == {
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
        "details": {},
    }


def test_a_scheme_hermes_does_not_accept_is_named_in_the_401(api: Any, alice: Any) -> None:
    api.credentials(HTTP_AUTHORIZATION="Basic YWxpY2U6c2VjcmV0")
    response = api.get("/api/v1/me")
    assert response.status_code == 401 and response.data["error"]["code"] == "not_authenticated"
    assert response.data["error"]["message"] == (
        "The Authorization scheme 'Basic' is not accepted: send an API key as 'Authorization: Bearer hrm_…'."
    )
    # Skipped, not refused: a proxy's Basic credentials do not stop the console session behind them.
    api.force_login(alice)
    assert api.get("/api/v1/me").status_code == 200


def test_a_key_sent_without_its_scheme_is_not_quoted_back(api: Any, org: Any, alice: Any) -> None:
    _key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    api.credentials(HTTP_AUTHORIZATION=plaintext)  # "Bearer " left out: the scheme is the secret itself
    response = api.get("/api/v1/me")
    assert response.status_code == 401 and plaintext[:8] not in response.content.decode()
    assert response.data["error"]["message"] == (
        "The API key must follow the scheme: send it as 'Authorization: Bearer hrm_…'."
    )


def test_other_bearer_tokens_are_left_alone(api: Any) -> None:
    api.credentials(HTTP_AUTHORIZATION="Bearer not-a-hermes-token")
    error = api.get("/api/v1/me").data["error"]
    assert error["code"] == "not_authenticated" and "not a Hermes API key" in error["message"]
    api.credentials(HTTP_AUTHORIZATION="Bearer hrm_a b")
    assert api.get("/api/v1/me").data["error"]["code"] == "key_malformed"


def test_a_key_naming_another_org_in_x_hermes_org_is_refused(org: Any, other_org: Any, alice: Any, api: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    mixed = key_client(plaintext).get("/api/v1/me", HTTP_X_HERMES_ORG="globex")
    assert mixed.status_code == 400 and mixed.data["error"]["code"] == "org_mismatch"
    assert "belongs to 'acme', but X-Hermes-Org names 'globex'" in mixed.data["error"]["message"]
    assert key_client(plaintext).get("/api/v1/me", HTTP_X_HERMES_ORG="acme").status_code == 200
    # A session naming an org that is not theirs reads the name back as it was written (it came back as mojibake).
    api.force_login(alice)
    refused = api.get("/api/v1/tasks", HTTP_X_HERMES_ORG="dëmo".encode().decode("latin-1"))
    assert "'dëmo'" in refused.data["error"]["message"]


def test_a_key_cannot_exceed_its_creator(org: Any, dave: Any, client_for: Any) -> None:
    client = client_for(dave)
    response = client.post("/api/v1/keys", {"name": "x", "scopes": ["tasks:read", "org:admin"]}, format="json")
    assert response.status_code == 400
    assert "org:admin" in response.data["error"]["details"]["scopes"][0]
    assert APIKey.objects.for_org(org).count() == 0
    response = client.post("/api/v1/keys", {"name": "x", "scopes": ["tasks:read", "agents:write"]}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["key"].startswith("hrm_")
    assert response.data["scopes"] == ["agents:write", "tasks:read"]


def test_a_key_cannot_mint_a_broader_key(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:admin", "tasks:read"])
    client = key_client(plaintext)
    response = client.post("/api/v1/keys", {"name": "wider", "scopes": ["agents:write"]}, format="json")
    assert response.status_code == 400
    assert "agents:write" in response.data["error"]["details"]["scopes"][0]
    response = client.post("/api/v1/keys", {"name": "same", "scopes": ["tasks:read"]}, format="json")
    assert response.status_code == 201


def test_missing_scope_is_a_403_naming_the_scope(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["tasks:read"])
    response = key_client(plaintext).get("/api/v1/keys")
    assert response.status_code == 403
    assert response.data["error"] == {
        "code": "missing_scope",
        "message": "This API key lacks the scope 'org:admin'.",
        "details": {"required_scope": "org:admin"},
    }


def test_plaintext_is_returned_once(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    created = client.post("/api/v1/keys", {"name": "once", "scopes": ["tasks:read"]}, format="json")
    assert "key" in created.data
    listed = client.get("/api/v1/keys")
    assert [row["id"] for row in listed.data["results"]] == [created.data["id"]]
    assert "key" not in listed.data["results"][0]
    assert "key" not in client.get(f"/api/v1/keys/{created.data['id']}").data


def test_rotation_keeps_the_old_key_for_the_grace_period(org: Any, alice: Any, client_for: Any) -> None:
    key, old = issue_api_key(alice, org, scopes=["org:read"])
    before = timezone.now()
    response = client_for(alice).post(f"/api/v1/keys/{key.pk}/rotate", {"grace_seconds": 600}, format="json")
    assert response.status_code == 201, response.data
    new = response.data["key"]
    assert new != old and response.data["scopes"] == ["org:read"]
    key.refresh_from_db()
    assert key.rotated_to_id == response.data["id"]
    assert before + timedelta(seconds=600) <= key.expires_at <= timezone.now() + timedelta(seconds=600)
    # Within the grace period both keys work.
    assert key_client(old).get("/api/v1/me").status_code == 200
    assert key_client(new).get("/api/v1/me").status_code == 200
    # The grace period ends (the clock passes expires_at): the old key stops, naming its successor.
    _age(key, expires_at=timezone.now() - timedelta(seconds=1))
    expired = key_client(old).get("/api/v1/me")
    assert expired.status_code == 401
    assert expired.data["error"]["code"] == "key_expired"
    successor_display = APIKey.objects.for_org(org).get(pk=response.data["id"]).display
    assert f"It was rotated to {successor_display} and its grace period is over" in expired.data["error"]["message"]
    assert key_client(new).get("/api/v1/me").status_code == 200
    # A rotated key cannot be rotated twice (its successor can).
    again = client_for(alice).post(f"/api/v1/keys/{key.pk}/rotate", {}, format="json")
    assert again.status_code == 409 and again.data["error"]["code"] in {"key_already_rotated", "key_expired"}
    successor = client_for(alice).post(f"/api/v1/keys/{response.data['id']}/rotate", {}, format="json")
    assert successor.status_code == 201


def test_rotation_never_extends_an_earlier_expiry(org: Any, alice: Any, client_for: Any) -> None:
    soon = timezone.now() + timedelta(minutes=5)
    key, _ = issue_api_key(alice, org, scopes=["org:read"], expires_at=soon)
    response = client_for(alice).post(f"/api/v1/keys/{key.pk}/rotate", {"grace_seconds": 86400}, format="json")
    assert response.status_code == 201
    key.refresh_from_db()
    assert key.expires_at == soon
    assert response.data["expires_at"] is not None  # the successor inherits the lifetime


def test_rotation_with_zero_grace_stops_the_old_key_now(org: Any, alice: Any, client_for: Any) -> None:
    key, old = issue_api_key(alice, org, scopes=["org:read"])
    response = client_for(alice).post(f"/api/v1/keys/{key.pk}/rotate", {"grace_seconds": 0}, format="json")
    assert response.status_code == 201
    assert key_client(old).get("/api/v1/me").data["error"]["code"] == "key_expired"


def test_revocation_is_immediate(org: Any, alice: Any, client_for: Any) -> None:
    key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)
    assert client.get("/api/v1/me").status_code == 200
    response = client_for(alice).post(f"/api/v1/keys/{key.pk}/revoke")
    assert response.status_code == 200 and response.data["state"] == "revoked"
    denied = client.get("/api/v1/me")
    assert denied.status_code == 401 and denied.data["error"]["code"] == "key_revoked"
    assert AuditEvent.objects.filter(action="api_key.revoked", target_id=str(key.pk)).count() == 1
    # Rotating a revoked key is refused.
    rotate = client_for(alice).post(f"/api/v1/keys/{key.pk}/rotate", {}, format="json")
    assert rotate.status_code == 409 and rotate.data["error"]["code"] == "key_revoked"


def test_revoking_a_key_revokes_the_keys_made_with_it(org: Any, alice: Any, client_for: Any) -> None:
    # A leaked key's children went on working after it was revoked, and nothing showed which keys it had made.
    parent, plaintext = issue_api_key(alice, org, scopes=["org:admin", "org:read"])
    made = key_client(plaintext).post(
        "/api/v1/keys", {"name": "child", "scopes": ["org:admin", "org:read"]}, format="json"
    )
    assert made.status_code == 201, made.data
    child = key_client(made.data["key"])
    grandchild = child.post("/api/v1/keys", {"name": "grandchild", "scopes": ["org:read"]}, format="json").data
    unrelated, unrelated_plaintext = issue_api_key(alice, org, scopes=["org:read"])
    listed = {row["name"]: row["parent"] for row in client_for(alice).get("/api/v1/keys").data["results"]}
    assert listed["child"] == parent.pk and listed["grandchild"] == made.data["id"] and listed[unrelated.name] is None
    # Rotating the child: its successor takes its place, the grandchild included.
    successor = client_for(alice).post(f"/api/v1/keys/{made.data['id']}/rotate", {}, format="json").data
    assert APIKey.objects.for_org(org).get(pk=grandchild["id"]).parent_id == successor["id"]
    assert client_for(alice).post(f"/api/v1/keys/{parent.pk}/revoke").status_code == 200
    for token in (made.data["key"], successor["key"], grandchild["key"]):
        denied = key_client(token).get("/api/v1/me")
        assert denied.status_code == 401 and denied.data["error"]["code"] == "key_revoked", token[:8]
    assert key_client(unrelated_plaintext).get("/api/v1/me").status_code == 200
    rows = AuditEvent.objects.filter(action="api_key.revoked", details__revoked_with=str(successor["id"]))
    assert {row.target_id for row in rows} == {str(grandchild["id"]), str(made.data["id"])}  # child, predecessor


def test_revoking_a_rotated_keys_successor_ends_the_old_token_and_what_it_made(org: Any, alice: Any) -> None:
    # The old token works on in its grace period; keys it made hung from it, and revoking the successor after a
    # leak left both working.
    old, plaintext = issue_api_key(alice, org, scopes=["org:admin", "org:read"])
    successor = key_client(plaintext).post(f"/api/v1/keys/{old.pk}/rotate", {"grace_seconds": 600}, format="json")
    assert successor.status_code == 201, successor.data
    made = key_client(plaintext).post("/api/v1/keys", {"name": "late", "scopes": ["org:read"]}, format="json").data
    assert made["parent"] == successor.data["id"]  # the key that outlives the old token
    assert key_client(successor.data["key"]).post(f"/api/v1/keys/{successor.data['id']}/revoke").status_code == 200
    for token in (plaintext, made["key"]):
        assert key_client(token).get("/api/v1/me").data["error"]["code"] == "key_revoked"


def test_a_request_that_authenticated_before_its_key_was_revoked_makes_no_key(org: Any, alice: Any) -> None:
    """A key made through a key while that key was being revoked escaped the cascade (it was inserted after the
    revocation read the keys made with it) and went on working: the request's key is read again under the lock
    that revocations take, so the request is refused as its next one would be."""
    from apps.orgs import actions, auth

    parent, plaintext = issue_api_key(alice, org, scopes=["org:admin", "org:read"])
    _user, access = auth.resolve_api_key(plaintext)  # authenticated ...
    actions.revoke_api_key(access=access, key=parent)  # ... then revoked, before the request's write
    with pytest.raises(auth.APIKeyError) as made:
        actions.create_api_key(access=access, name="late", scopes=["org:read"])
    assert made.value.error_code == "key_revoked"
    with pytest.raises(auth.APIKeyError) as rotated:
        actions.rotate_api_key(access=access, key=issue_api_key(alice, org, scopes=["org:read"])[0])
    assert rotated.value.error_code == "key_revoked"
    assert not APIKey.objects.for_org(org).filter(parent=parent).exists()
    assert APIKey.objects.for_org(org).filter(revoked_at=None).count() == 1  # the key rotate_api_key was given


def test_developers_manage_only_their_own_keys(org: Any, alice: Any, dave: Any, client_for: Any) -> None:
    alices, _ = issue_api_key(alice, org, scopes=["tasks:read"])
    daves, _ = issue_api_key(dave, org, scopes=["tasks:read"])
    client = client_for(dave)
    assert [row["id"] for row in client.get("/api/v1/keys").data["results"]] == [daves.pk]
    assert client.get(f"/api/v1/keys/{alices.pk}").status_code == 404
    assert client.post(f"/api/v1/keys/{alices.pk}/revoke").status_code == 404
    assert client.post(f"/api/v1/keys/{daves.pk}/revoke").status_code == 200


def _age(key: APIKey, **fields: Any) -> None:
    """Move a key's timestamps into the past (the clock moving forward, as far as the key can tell)."""
    APIKey.objects.for_org(key.organization_id).filter(pk=key.pk).update(**fields)


def test_last_used_is_written_at_most_once_a_minute(org: Any, alice: Any, django_assert_num_queries: Any) -> None:
    key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)

    def me(queries: int, updates: int) -> None:
        # /me = the key lookup + (maybe) the last-used UPDATE + the memberships read.
        with django_assert_num_queries(queries) as ctx:
            assert client.get("/api/v1/me", REMOTE_ADDR="10.1.2.3").status_code == 200
        assert sum(q["sql"].startswith('UPDATE "orgs_apikey"') for q in ctx.captured_queries) == updates

    me(queries=3, updates=1)  # first use
    for _ in range(5):
        me(queries=2, updates=0)
    _age(key, last_used_at=timezone.now() - timedelta(seconds=59))
    me(queries=2, updates=0)
    _age(key, last_used_at=timezone.now() - timedelta(seconds=61))
    me(queries=3, updates=1)
    key.refresh_from_db()
    assert key.last_used_ip == "10.1.2.3"
    assert timezone.now() - key.last_used_at < timedelta(seconds=5)


def test_concurrent_stale_reads_write_last_used_once(org: Any, alice: Any) -> None:
    from apps.orgs.auth import touch_last_used

    key, _ = issue_api_key(alice, org, scopes=["org:read"])
    stale_a = APIKey.objects.for_org(org).get(pk=key.pk)
    stale_b = APIKey.objects.for_org(org).get(pk=key.pk)
    now = timezone.now()
    touch_last_used(stale_a, "10.0.0.1", now)
    touch_last_used(stale_b, "10.0.0.2", now)  # saw NULL too, but the conditional UPDATE matches nothing
    key.refresh_from_db()
    assert key.last_used_ip == "10.0.0.1"


def test_key_authentication_is_one_query(org: Any, alice: Any, django_assert_num_queries: Any) -> None:
    """Key + org + creator + the creator's current role come back in one row; /me then reads memberships."""
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)
    client.get("/api/v1/me")  # first use writes last_used_at
    with django_assert_num_queries(2):
        assert client.get("/api/v1/me").status_code == 200


# --- WebSockets ------------------------------------------------------------------------------------------------


def _ws_scope(headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict[str, Any]:
    return {"type": "websocket", "headers": headers or [], "query_string": query, "client": ("10.0.0.9", 5555)}


def _resolve(scope: dict[str, Any]) -> dict[str, Any]:
    from hermes_site.ws_auth import AccessMiddleware

    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    async def call() -> None:
        await AccessMiddleware(inner)(scope, None, None)

    async_to_sync(call)()
    return seen


@pytest.mark.django_db(transaction=True)
def test_websockets_accept_a_key_in_the_header_or_query(org: Any, alice: Any) -> None:
    key, plaintext = issue_api_key(alice, org, scopes=["tasks:read"])
    by_header = _resolve(_ws_scope([(b"authorization", f"Bearer {plaintext}".encode())]))
    assert by_header["user"] == alice
    assert by_header["access"].org == org and by_header["access"].scopes == frozenset({"tasks:read"})
    by_query = _resolve(_ws_scope(query=f"api_key={plaintext}".encode()))
    assert by_query["access"].api_key.pk == key.pk
    APIKey.objects.for_org(org).filter(pk=key.pk).update(revoked_at=timezone.now())
    refused = _resolve(_ws_scope(query=f"api_key={plaintext}".encode()))
    assert refused["access"] is None and not refused["user"].is_authenticated
    assert refused["auth_error"] == "key_revoked"
    anonymous = _resolve(_ws_scope())
    assert anonymous["access"] is None


def test_the_rotation_audit_row_records_the_successors_scopes(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    key, _ = issue_api_key(alice, org, scopes=["org:read", "tasks:read"])
    narrowed = client.post(f"/api/v1/keys/{key.pk}/rotate", {"scopes": ["tasks:read"]}, format="json")
    assert narrowed.status_code == 201 and narrowed.data["scopes"] == ["tasks:read"]
    event = AuditEvent.objects.get(org_id=org.pk, action="api_key.rotated", target_id=str(key.pk))
    assert event.details["successor_id"] == narrowed.data["id"]
    assert event.details["scopes"] == ["tasks:read"]
    assert event.details["old_key_scopes"] == ["org:read", "tasks:read"]
    # Scopes kept: the successor's are recorded all the same, and no old ones beside them.
    kept = client.post(f"/api/v1/keys/{narrowed.data['id']}/rotate", {}, format="json")
    assert kept.status_code == 201
    event = AuditEvent.objects.get(org_id=org.pk, action="api_key.rotated", target_id=str(narrowed.data["id"]))
    assert event.details["scopes"] == ["tasks:read"] and "old_key_scopes" not in event.details


# --- A key created or rotated with a key: bounded by it ----------------------------------------------------------


def _moment(value: Any) -> str:
    """A moment as the API writes it (and as the refusals quote it)."""
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def test_a_key_created_with_a_key_inherits_its_expiry_and_rate_limit(org: Any, alice: Any) -> None:
    ends = timezone.now() + timedelta(days=7)
    _, plaintext = issue_api_key(
        alice, org, scopes=["org:admin", "tasks:read"], expires_at=ends, rate_limit_per_minute=30
    )
    client = key_client(plaintext)
    inherited = client.post("/api/v1/keys", {"name": "child", "scopes": ["tasks:read"]}, format="json")
    assert inherited.status_code == 201, inherited.data
    child = APIKey.objects.for_org(org).get(pk=inherited.data["id"])
    assert child.expires_at == ends and child.rate_limit_per_minute == 30
    # Asking for less than the parent has is fine.
    sooner = ends - timedelta(days=1)
    narrower = client.post(
        "/api/v1/keys",
        {"name": "shorter", "scopes": ["tasks:read"], "expires_at": _moment(sooner), "rate_limit_per_minute": 10},
        format="json",
    )
    assert narrower.status_code == 201, narrower.data
    child = APIKey.objects.for_org(org).get(pk=narrower.data["id"])
    assert child.expires_at == sooner and child.rate_limit_per_minute == 10
    # A session has no parent: left out is no expiry and no limit of its own, as before.
    session = APIKey.objects.for_org(org).get(pk=issue_api_key(alice, org, scopes=["tasks:read"])[0].pk)
    assert session.expires_at is None and session.rate_limit_per_minute is None


@pytest.mark.parametrize(
    ("asked", "field", "message"),
    [
        (
            {"expires_at": None},
            "expires_at",
            "This key would never expire, but the API key making this request ({parent}) expires at {ends}: a key "
            "cannot outlive the key that creates it. Choose {ends} or earlier, or leave expires_at out to inherit it.",
        ),
        (
            {"expires_at": "later"},
            "expires_at",
            "This key would expire at {later}, but the API key making this request ({parent}) expires at {ends}: a "
            "key cannot outlive the key that creates it. Choose {ends} or earlier, or leave expires_at out to "
            "inherit it.",
        ),
        (
            {"rate_limit_per_minute": None},
            "rate_limit_per_minute",
            "This key would have no rate limit of its own, but the API key making this request ({parent}) is "
            "limited to 30 requests per minute: a key cannot out-rate the key that creates it. Choose 30 or fewer, "
            "or leave rate_limit_per_minute out to inherit it.",
        ),
        (
            {"rate_limit_per_minute": 31},
            "rate_limit_per_minute",
            "This key would allow 31 requests per minute, but the API key making this request ({parent}) is limited "
            "to 30 requests per minute: a key cannot out-rate the key that creates it. Choose 30 or fewer, or leave "
            "rate_limit_per_minute out to inherit it.",
        ),
    ],
)
def test_a_key_cannot_create_a_key_that_outlives_or_out_rates_it(
    org: Any, alice: Any, asked: dict[str, Any], field: str, message: str
) -> None:
    ends = timezone.now() + timedelta(days=7)
    later = ends + timedelta(seconds=1)
    parent, plaintext = issue_api_key(alice, org, scopes=["org:admin"], expires_at=ends, rate_limit_per_minute=30)
    if asked.get("expires_at") == "later":
        asked = {"expires_at": _moment(later)}
    before = (APIKey.objects.for_org(org).count(), AuditEvent.objects.count())
    response = key_client(plaintext).post(
        "/api/v1/keys", {"name": "child", "scopes": ["org:admin"], **asked}, format="json"
    )
    assert response.status_code == 400, response.data
    assert response.data["error"]["details"] == {
        field: [message.format(parent=parent.display, ends=_moment(ends), later=_moment(later))]
    }
    assert (APIKey.objects.for_org(org).count(), AuditEvent.objects.count()) == before


def test_every_field_a_key_may_not_grant_is_named_at_once(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(
        alice, org, scopes=["org:admin"], expires_at=timezone.now() + timedelta(days=1), rate_limit_per_minute=5
    )
    body = {"name": "x", "scopes": ["tasks:read"], "expires_at": None, "rate_limit_per_minute": 6}
    response = key_client(plaintext).post("/api/v1/keys", body, format="json")
    assert response.status_code == 400
    assert set(response.data["error"]["details"]) == {"scopes", "expires_at", "rate_limit_per_minute"}


def test_a_key_without_limits_lets_the_keys_it_creates_choose(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:admin"])
    ends = timezone.now() + timedelta(days=400)
    body = {"name": "x", "scopes": ["org:admin"], "expires_at": _moment(ends), "rate_limit_per_minute": 100}
    response = key_client(plaintext).post("/api/v1/keys", body, format="json")
    assert response.status_code == 201 and response.data["rate_limit_per_minute"] == 100
    unbounded = key_client(plaintext).post("/api/v1/keys", {"name": "y", "scopes": ["org:admin"]}, format="json")
    assert unbounded.data["expires_at"] is None and unbounded.data["rate_limit_per_minute"] is None


def test_a_key_cannot_rotate_a_key_into_one_that_outlives_or_out_rates_it(org: Any, alice: Any) -> None:
    ends = timezone.now() + timedelta(days=1)
    parent, plaintext = issue_api_key(alice, org, scopes=["org:admin"], expires_at=ends, rate_limit_per_minute=30)
    forever, _ = issue_api_key(alice, org, scopes=["org:admin"], name="deploy")
    client = key_client(plaintext)
    response = client.post(f"/api/v1/keys/{forever.pk}/rotate", {}, format="json")
    assert response.status_code == 400
    instead = (
        "Rotate it with a signed-in session (or a key that lives as long), or create a new key, which inherits the "
        "limits of the key making the request."
    )
    assert response.data["error"]["details"] == {
        "expires_at": [
            f"The successor of {forever.display} would keep its expiry and never expire, but the API key making this "
            f"request ({parent.display}) expires at {_moment(ends)}: a key cannot issue a key that outlives it. "
            + instead
        ],
        "rate_limit_per_minute": [
            f"The successor of {forever.display} would keep its rate limit and have no rate limit of its own, but the "
            f"API key making this request ({parent.display}) is limited to 30 requests per minute: a key cannot issue "
            "a key that out-rates it. " + instead
        ],
    }
    forever.refresh_from_db()  # nothing rotated: the old key keeps its life
    assert forever.rotated_to_id is None and forever.expires_at is None
    # Within the parent's bounds (or rotating itself) it rotates as before.
    bounded, _ = issue_api_key(alice, org, scopes=["org:admin"], expires_at=ends, rate_limit_per_minute=20)
    assert client.post(f"/api/v1/keys/{bounded.pk}/rotate", {}, format="json").status_code == 201
    itself = client.post(f"/api/v1/keys/{parent.pk}/rotate", {}, format="json")
    assert itself.status_code == 201 and itself.data["rate_limit_per_minute"] == 30


# --- State ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["removed", "deactivated"])
def test_a_key_whose_creator_is_gone_says_so(org: Any, alice: Any, bob: Any, client_for: Any, how: str) -> None:
    key, plaintext = issue_api_key(bob, org, scopes=["org:read"])
    if how == "removed":
        Membership.objects.for_org(org).filter(user=bob).delete()
    else:
        type(bob).objects.filter(pk=bob.pk).update(is_active=False)
    assert key_client(plaintext).get("/api/v1/me").data["error"]["code"] == "key_creator_gone"
    client = client_for(alice)
    assert client.get(f"/api/v1/keys/{key.pk}").data["state"] == "creator_gone"
    assert [row["state"] for row in client.get("/api/v1/keys").data["results"]] == ["creator_gone"]
    schema = client.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    assert schema["APIKey"]["properties"]["state"]["allOf"] == [{"$ref": "#/components/schemas/APIKeyStateEnum"}]
    assert schema["APIKeyStateEnum"]["enum"] == ["active", "expired", "revoked", "creator_gone"]
    # Rotating re-issues it under the rotating admin (it was refused as not active, or left in place).
    rotated = client.post(f"/api/v1/keys/{key.pk}/rotate", {}, format="json")
    assert rotated.status_code == 201 and rotated.data["state"] == "active"
    assert rotated.data["created_by"] == alice.email
    assert key_client(rotated.data["key"]).get("/api/v1/me").status_code == 200
    # Revoked or expired says that first, as authentication does.
    revoked = client.post(f"/api/v1/keys/{key.pk}/revoke")
    assert revoked.data["state"] == "revoked"


def test_the_key_list_reads_every_state_in_one_query(
    org: Any, alice: Any, bob: Any, dave: Any, client_for: Any, django_assert_num_queries: Any
) -> None:
    issue_api_key(alice, org, scopes=["org:read"])
    issue_api_key(bob, org, scopes=["org:read"])
    issue_api_key(dave, org, scopes=["tasks:read"])
    Membership.objects.for_org(org).filter(user=dave).delete()
    client = client_for(alice)
    client.get("/api/v1/keys")  # the session's first request
    # Session + user + memberships (the org), then the page of keys with creators and their roles.
    with django_assert_num_queries(4):
        states = [row["state"] for row in client.get("/api/v1/keys").data["results"]]
    assert states == ["creator_gone", "active", "active"]


# --- One's own keys, whatever one's role now -------------------------------------------------------------------


def test_a_demoted_developer_still_sees_and_revokes_their_own_keys(
    org: Any, alice: Any, dave: Any, client_for: Any
) -> None:
    daves, plaintext = issue_api_key(dave, org, scopes=["tasks:read", "agents:write"])
    alices, _ = issue_api_key(alice, org, scopes=["tasks:read"])
    Membership.objects.for_org(org).filter(user=dave).update(role=Role.MEMBER)
    assert key_client(plaintext).get("/api/v1/tasks").status_code == 200  # still works, narrowed to a member
    client = client_for(dave)
    assert [row["id"] for row in client.get("/api/v1/keys").data["results"]] == [daves.pk]
    assert client.get(f"/api/v1/keys/{daves.pk}").data["state"] == "active"
    assert client.get(f"/api/v1/keys/{alices.pk}").status_code == 404
    assert client.post(f"/api/v1/keys/{alices.pk}/revoke").status_code == 404
    # Issuing stays a developer's: creating and rotating are refused, naming keys:own.
    for refused in (
        client.post("/api/v1/keys", {"name": "x", "scopes": ["tasks:read"]}, format="json"),
        client.post(f"/api/v1/keys/{daves.pk}/rotate", {}, format="json"),
    ):
        assert refused.status_code == 403
        assert refused.data["error"]["code"] == "role_forbidden"
        assert refused.data["error"]["details"] == {"required_action": "keys:own", "role": "member"}
    revoked = client.post(f"/api/v1/keys/{daves.pk}/revoke")
    assert revoked.status_code == 200 and revoked.data["state"] == "revoked"
    assert key_client(plaintext).get("/api/v1/tasks").data["error"]["code"] == "key_revoked"
    alices.refresh_from_db()
    assert alices.revoked_at is None


def test_a_key_still_needs_org_admin_to_see_keys(org: Any, dave: Any) -> None:
    # keys:own is a person's right: a key (even one listing only its creator's keys) needs org:admin.
    _, plaintext = issue_api_key(dave, org, scopes=["tasks:read"])
    response = key_client(plaintext).get("/api/v1/keys")
    assert response.status_code == 403 and response.data["error"]["code"] == "missing_scope"
