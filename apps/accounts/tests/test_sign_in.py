"""Console sign-in past its budgets: per client address (shared with the public endpoints) and per account (failed
sign-ins, from whatever addresses)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.orgs import quotas

pytestmark = pytest.mark.django_db
LOGIN = "/accounts/login/?next=/tasks/"
RIGHT = {"username": "alice@acme.test", "password": "correct-horse-battery"}  # tests.factories.UserFactory


@pytest.fixture
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)  # one window, whatever the wall clock


def test_a_throttled_sign_in_shows_the_form_again_with_next_and_the_reason_once(
    alice: Any, client: Client, monkeypatch: pytest.MonkeyPatch, one_window: None
) -> None:
    # It was `302 Location: /` (next dropped), and each throttled post queued the message once more.
    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 1)
    assert client.post(LOGIN, {"username": "alice@acme.test", "password": "wrong"}).status_code == 200
    for _ in range(3):
        refused = client.post(LOGIN, RIGHT)
        assert refused.status_code == 429 and refused["Retry-After"] == "30"
        html = refused.content.decode()
        assert html.count("requests per minute from one address is used up; it resets in 30 s") == 1
        assert 'name="next" value="/tasks/"' in html
        assert 'value="alice@acme.test"' in html  # what was typed, to send again
        assert "_auth_user_id" not in client.session
    # Nothing left over for the next page.
    assert "used up" not in client.get("/accounts/login/").content.decode()


def test_an_account_has_a_budget_of_failed_sign_ins_whatever_the_address(
    alice: Any, client: Client, monkeypatch: pytest.MonkeyPatch, one_window: None
) -> None:
    monkeypatch.setattr(quotas, "SIGN_IN_FAILURES_PER_MINUTE", 3)
    addresses = ["198.51.100.1", "198.51.100.2", "2001:db8::1"]
    for address in addresses:
        wrong = client.post(LOGIN, {"username": "Alice@acme.test", "password": "guess"}, REMOTE_ADDR=address)
        assert wrong.status_code == 200
    # A fresh address, and the right password: refused until the minute ends.
    refused = client.post(LOGIN, RIGHT, REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 429 and refused["Retry-After"] == "30"
    html = refused.content.decode()
    assert "This account&#x27;s limit of 3 failed sign-ins per minute, from whatever address, is used up" in html
    assert 'name="next" value="/tasks/"' in html and "_auth_user_id" not in client.session
    # Another account is not affected, and successful sign-ins do not count.
    bob_client = Client()
    from tests.factories import UserFactory

    UserFactory(email="bob@acme.test")
    for _ in range(4):
        signed_in = bob_client.post(LOGIN, {"username": "bob@acme.test", "password": "correct-horse-battery"})
        assert signed_in.status_code == 302 and signed_in["Location"] == "/tasks/"
        bob_client.post("/accounts/logout/")
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_090.0)  # the next minute
    assert client.post(LOGIN, RIGHT, REMOTE_ADDR="203.0.113.9").status_code == 302


def test_the_admin_sign_in_has_the_same_budget_per_account(
    client: Client, monkeypatch: pytest.MonkeyPatch, one_window: None
) -> None:
    # It guards the staff accounts, and had only the per-address budget.
    from tests.factories import UserFactory

    UserFactory(email="staff@acme.test", is_staff=True, is_superuser=True)
    monkeypatch.setattr(quotas, "SIGN_IN_FAILURES_PER_MINUTE", 2)
    staff = {"username": "staff@acme.test", "password": "correct-horse-battery", "next": "/admin/"}
    for address in ("198.51.100.1", "198.51.100.2"):
        guess = client.post("/admin/login/", {**staff, "password": "guess"}, REMOTE_ADDR=address)
        assert guess.status_code == 200 and "_auth_user_id" not in client.session
    refused = client.post("/admin/login/", staff, REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 302 and "_auth_user_id" not in client.session
    assert "failed sign-ins per minute" in client.get(refused["Location"], follow=True).content.decode()
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_090.0)  # the next minute
    assert client.post("/admin/login/", staff, REMOTE_ADDR="203.0.113.9").status_code == 302
    assert "_auth_user_id" in client.session


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", True),  # one /64: one client
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("192.0.2.1", "::ffff:192.0.2.1", True),  # the IPv4 client, however written
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
def test_ipv6_clients_share_a_budget_per_64(
    client: Client, monkeypatch: pytest.MonkeyPatch, one_window: None, first: str, second: str, shared: bool
) -> None:
    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 1)
    reset = "/api/v1/auth/password/reset"
    body = {"email": "a@example.test"}
    assert client.post(reset, body, content_type="application/json", REMOTE_ADDR=first).status_code == 202
    second_status = client.post(reset, body, content_type="application/json", REMOTE_ADDR=second).status_code
    assert second_status == (429 if shared else 202)


def _fail(client: Client, times: int, address: str = "198.51.100.7") -> None:
    for _ in range(times):
        wrong = client.post(LOGIN, {"username": "alice@acme.test", "password": "guess"}, REMOTE_ADDR=address)
        assert wrong.status_code == 200 and "_auth_user_id" not in wrong.wsgi_request.session


def test_a_browser_that_signed_in_before_keeps_its_own_budget(
    alice: Any, monkeypatch: pytest.MonkeyPatch, one_window: None
) -> None:
    # Failing on purpose blocked the account's owner too, one minute at a time.
    monkeypatch.setattr(quotas, "SIGN_IN_FAILURES_PER_MINUTE", 2)
    owner = Client()
    assert owner.post(LOGIN, RIGHT).status_code == 302
    cookie = owner.cookies[quotas.KNOWN_BROWSER_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["max-age"] == quotas.KNOWN_BROWSER_MAX_AGE
    owner.post("/accounts/logout/")
    _fail(Client(), 2)  # someone else uses up the account's budget
    assert Client().post(LOGIN, RIGHT).status_code == 429
    assert owner.post(LOGIN, RIGHT).status_code == 302  # the owner's browser is not blocked
    owner.post("/accounts/logout/")
    # Its own failures use up its own budget, not another known browser's.
    _fail(owner, 2)
    refused = owner.post(LOGIN, RIGHT)
    assert refused.status_code == 429
    assert "This browser&#x27;s limit of 2 failed sign-ins per minute to this account is used up" in (
        refused.content.decode()
    )


@pytest.mark.parametrize("cookie", ["forged", "another account's", "expired"])
def test_only_a_valid_cookie_for_the_account_gives_a_budget_of_its_own(
    alice: Any, monkeypatch: pytest.MonkeyPatch, one_window: None, cookie: str
) -> None:
    from django.core import signing

    from tests.factories import UserFactory

    monkeypatch.setattr(quotas, "SIGN_IN_FAILURES_PER_MINUTE", 1)
    browser = Client()
    if cookie == "forged":
        browser.cookies[quotas.KNOWN_BROWSER_COOKIE] = signing.dumps(
            [quotas._sign_in_subject("alice@acme.test"), "x"], key="not-the-secret-key", salt="x"
        )
    else:
        UserFactory(email="bob@acme.test")
        who = "bob@acme.test" if cookie == "another account's" else "alice@acme.test"
        assert browser.post(LOGIN, {"username": who, "password": "correct-horse-battery"}).status_code == 302
        browser.post("/accounts/logout/")
        if cookie == "expired":
            monkeypatch.setattr(quotas, "KNOWN_BROWSER_MAX_AGE", -1)
    _fail(Client(), 1)
    assert browser.post(LOGIN, RIGHT).status_code == 429


def test_a_session_open_before_is_no_successful_sign_in_at_the_admin(
    alice: Any, client: Client, monkeypatch: pytest.MonkeyPatch, one_window: None
) -> None:
    # A signed-in member (not staff) guessing a staff password at /admin/login/: request.user was authenticated
    # all along, so the failures went uncounted.
    from tests.factories import UserFactory

    UserFactory(email="staff@acme.test", is_staff=True, is_superuser=True)
    monkeypatch.setattr(quotas, "SIGN_IN_FAILURES_PER_MINUTE", 2)
    client.force_login(alice)
    for _ in range(2):
        guess = client.post("/admin/login/", {"username": "staff@acme.test", "password": "guess", "next": "/admin/"})
        assert guess.status_code == 200
    assert quotas.KNOWN_BROWSER_COOKIE not in client.cookies
    staff = {"username": "staff@acme.test", "password": "correct-horse-battery", "next": "/admin/"}
    other = Client()
    refused = other.post("/admin/login/", staff)
    assert refused.status_code == 302 and "_auth_user_id" not in other.session
    assert "failed sign-ins per minute" in other.get(refused["Location"], follow=True).content.decode()
