"""Registration, password change and reset (actions through the API), with their bad-input paths."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import resolve

from apps.accounts import actions
from apps.orgs import quotas
from tests.factories import UserFactory, issue_api_key, key_client

pytestmark = pytest.mark.django_db
User = get_user_model()
STRONG = "tangerine-Orbit-42"


def test_register(api: Any) -> None:
    response = api.post(
        "/api/v1/auth/register", {"email": "New@Example.test", "password": STRONG, "name": "Nu"}, format="json"
    )
    assert response.status_code == 201 and response.data["email"] == "new@example.test"
    assert "password" not in response.data
    assert User.objects.get(email="new@example.test").check_password(STRONG)
    again = api.post("/api/v1/auth/register", {"email": "new@example.test", "password": STRONG}, format="json")
    assert again.status_code == 400 and "email" in again.data["error"]["details"]


def test_register_api_refuses_a_name_with_control_characters_as_the_console_does(api: Any) -> None:
    # A right-to-left override shown in every org the person joins ("evil\u202etxt.exe" reads as "evilexe.txt").
    for name in ("evil\u202etxt.exe", "line1\nline2"):
        body = {"email": "u1@example.test", "password": STRONG, "name": name}
        response = api.post("/api/v1/auth/register", body, format="json")
        assert response.status_code == 400, response.content
        assert "control characters" in response.json()["error"]["details"]["name"][0]
    assert not User.objects.filter(email="u1@example.test").exists()


def test_register_rejects_weak_passwords_and_writes_nothing(api: Any) -> None:
    response = api.post("/api/v1/auth/register", {"email": "weak@example.test", "password": "123"}, format="json")
    assert response.status_code == 400
    assert response.data["error"]["details"]["password"]  # the validators' messages
    assert not User.objects.filter(email="weak@example.test").exists()


def test_a_bad_key_does_not_block_public_endpoints(api: Any) -> None:
    api.credentials(HTTP_AUTHORIZATION="Bearer hrm_" + "x" * 43)
    response = api.post("/api/v1/auth/register", {"email": "k@example.test", "password": STRONG}, format="json")
    assert response.status_code == 201


def test_public_endpoints_are_rate_limited_per_address(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 2)
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)  # one window, whatever the wall clock
    for _ in range(2):
        assert api.post("/api/v1/auth/password/reset", {"email": "a@example.test"}, format="json").status_code == 202
    refused = api.post("/api/v1/auth/password/reset", {"email": "a@example.test"}, format="json")
    assert refused.status_code == 429 and "Retry-After" in refused
    assert refused.data["error"]["details"]["limit"] == "address_requests_per_minute"


def test_console_sign_in_shares_the_per_address_limit(alice: Any, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guessing passwords through the console form is limited like the API's public endpoints."""
    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 3)
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)
    for guess in ("one", "two"):
        wrong = client.post("/accounts/login/", {"username": "alice@acme.test", "password": guess})
        assert wrong.status_code == 200 and "_auth_user_id" not in client.session
    api_call = client.post(  # the same budget
        "/api/v1/auth/password/reset", {"email": "a@example.test"}, content_type="application/json"
    )
    assert api_call.status_code == 202
    right = {"username": "alice@acme.test", "password": "correct-horse-battery"}  # tests.factories.UserFactory
    refused = client.post("/accounts/login/", right, follow=True)
    assert "_auth_user_id" not in client.session  # even the right password waits for the reset
    assert "requests per minute from one address is used up; it resets in 30 s" in refused.content.decode()
    other_address = client.post(
        "/accounts/login/", {"username": "alice@acme.test", "password": "x"}, REMOTE_ADDR="198.51.100.7"
    )
    assert other_address.status_code == 200  # a different address has its own budget
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_090.0)  # the next minute
    assert client.post("/accounts/login/", right).status_code == 302 and "_auth_user_id" in client.session


def test_the_admin_sign_in_shares_the_per_address_limit(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # It took every guess: 30 wrong passwords, then the right one signed a staff member in.
    staff = UserFactory(email="root@qa.test", is_staff=True, is_superuser=True)
    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 2)
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)
    for guess in ("one", "two"):
        assert client.post("/admin/login/", {"username": staff.email, "password": guess}).status_code == 200
    right = {"username": staff.email, "password": "correct-horse-battery", "next": "/admin/"}
    client.post("/admin/login/", right)
    assert "_auth_user_id" not in client.session
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_090.0)  # the next minute
    assert client.post("/admin/login/", right).status_code == 302 and "_auth_user_id" in client.session


def test_change_password(alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    wrong = client.post(
        "/api/v1/auth/password/change", {"current_password": "nope", "new_password": STRONG}, format="json"
    )
    assert wrong.status_code == 400 and "current_password" in wrong.data["error"]["details"]
    ok = client.post(
        "/api/v1/auth/password/change",
        {"current_password": "correct-horse-battery", "new_password": STRONG},
        format="json",
    )
    assert ok.status_code == 204
    alice.refresh_from_db()
    assert alice.check_password(STRONG)
    assert client.get("/api/v1/me").status_code == 200  # the session survives its own password change


def test_me_with_an_org_header_naming_none_of_mine_is_refused_like_everywhere(
    org: Any, alice: Any, other_org: Any, client_for: Any
) -> None:
    client = client_for(alice)
    declared = client.get("/api/v1/schema/?format=json").json()["paths"]["/api/v1/me"]["get"]["responses"]
    for slug in ("globex", "no-such-org"):  # another org's, and none at all: the same answer
        me = client.get("/api/v1/me", HTTP_X_HERMES_ORG=slug)
        members = client.get("/api/v1/members", HTTP_X_HERMES_ORG=slug)
        assert me.status_code == members.status_code == 403
        assert me.json()["error"] == members.json()["error"]
        assert me.json()["error"]["code"] == "no_organization"
        assert "`no_organization`" in declared["403"]["description"]
    named = client.get("/api/v1/me", HTTP_X_HERMES_ORG="acme")
    assert named.status_code == 200 and named.data["current"]["org"] == "acme"
    # Without the header, a person in no org yet still learns who they are.
    loner = client_for(User.objects.create_user(email="loner@example.test", password=STRONG)).get("/api/v1/me")
    assert loner.status_code == 200 and loner.data["current"] is None and loner.data["memberships"] == []


def test_keys_cannot_change_passwords(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    response = key_client(plaintext).post(
        "/api/v1/auth/password/change",
        {"current_password": "correct-horse-battery", "new_password": STRONG},
        format="json",
    )
    assert response.status_code == 403 and response.data["error"]["code"] == "session_required"


def test_password_reset_round_trip(
    alice: Any, api: Any, django_capture_on_commit_callbacks: Any, eager_celery: None
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/auth/password/reset", {"email": "ALICE@acme.test"}, format="json").status_code == 202
        # Unknown addresses get the same answer and no mail.
        assert api.post("/api/v1/auth/password/reset", {"email": "x@nowhere.test"}, format="json").status_code == 202
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@acme.test"]
    link = re.search(r"https?://\S+", mail.outbox[0].body).group(0)  # type: ignore[union-attr]
    match = resolve(urlsplit(link).path)  # the console's reset page, wherever it is mounted
    assert match.view_name == "accounts:password_reset_confirm"
    uid, token = match.kwargs["uidb64"], match.kwargs["token"]
    assert actions.user_for_reset(uid, token) == alice
    weak = api.post(
        "/api/v1/auth/password/reset/confirm", {"uid": uid, "token": token, "new_password": "1"}, format="json"
    )
    assert weak.status_code == 400 and "new_password" in weak.data["error"]["details"]
    done = api.post(
        "/api/v1/auth/password/reset/confirm", {"uid": uid, "token": token, "new_password": STRONG}, format="json"
    )
    assert done.status_code == 204
    alice.refresh_from_db()
    assert alice.check_password(STRONG)
    # The token died with the old password.
    reused = api.post(
        "/api/v1/auth/password/reset/confirm", {"uid": uid, "token": token, "new_password": STRONG}, format="json"
    )
    assert reused.status_code == 400 and "token" in reused.data["error"]["details"]
    assert actions.user_for_reset("garbage", token) is None


def test_reset_tokens_expire(alice: Any, settings: Any) -> None:
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    # A token minted an hour and a second ago: past PASSWORD_RESET_TIMEOUT (3600 s).
    secs = default_token_generator._num_seconds(default_token_generator._now()) - settings.PASSWORD_RESET_TIMEOUT - 1
    old = default_token_generator._make_token_with_timestamp(alice, secs, default_token_generator.secret)
    assert actions.user_for_reset(uid, old) is None


# In the local part too: there the address's format check answered first, with only "Enter a valid email address."
@pytest.mark.parametrize(
    "email",
    ["demo@her\u200bmes.local", "demo@hermes.lo\u00adcal", "demo@her\u200cmes.local", "de\u200bmo@hermes.local"],
)
def test_an_address_with_invisible_characters_is_refused(api: Any, email: str) -> None:
    # Each registered a second account that lists, audit lines and selects showed as demo@hermes.local.
    response = api.post("/api/v1/auth/register", {"email": email, "password": STRONG}, format="json")
    assert response.status_code == 400
    assert "cannot contain invisible characters" in response.data["error"]["details"]["email"][0]
    assert not User.objects.filter(email__startswith="de").exists()


def test_an_invitation_to_an_address_with_invisible_characters_is_refused(
    org: Any, alice: Any, client_for: Any
) -> None:
    for email in ("bob@ac\u200bme.test", "b\u202eob@acme.test"):
        response = client_for(alice).post("/api/v1/invitations", {"email": email}, format="json")
        assert response.status_code == 400
        assert "cannot contain invisible characters" in response.data["error"]["details"]["email"][0], email
