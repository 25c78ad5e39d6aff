"""Console foundation: base layout, partial rendering, HTML errors for pages and JSON for the API, auth pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from apps.orgs.models import Membership, Organization

pytestmark = pytest.mark.django_db


def login(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/")


def test_a_fragment_sent_to_sign_in_moves_the_page_there(client: Client, alice: Any) -> None:
    """The session ended in another tab: htmx would follow the 302 and put the login page inside a card."""
    poll = client.get(
        "/federation/outbox/",
        {"status": "dead"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/federation/outbox/?status=dead",
    )
    assert poll.status_code == 204 and not poll.content
    assert poll["HX-Redirect"] == "/accounts/login/?next=/federation/outbox/%3Fstatus%3Ddead"  # the page, back
    # Someone removed from their only org: the page goes to create one, as a page load would.
    client.force_login(alice)
    Membership.objects.unscoped("test: alice leaves every org").filter(user=alice).delete()
    refreshed = client.get("/tasks/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/tasks/")
    assert refreshed.status_code == 204 and refreshed["HX-Redirect"] == "/orgs/new/"
    # A boosted navigation or a page load is an ordinary redirect.
    assert client.get("/tasks/").status_code == 302


def test_a_stale_csrf_token_says_to_reload(alice: Any) -> None:
    """A page left open across a sign-out and sign-in in another tab posts an outdated token."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get("/org/settings/")  # sets the CSRF cookie
    stale = browser.post("/org/settings/", {"name": "Renamed", "csrfmiddlewaretoken": "x" * 64})
    html = stale.content.decode()
    assert stale.status_code == 403 and "Page out of date" in html and "go back, reload it and send it again" in html
    assert "DEBUG=True" not in html and "<nav" in html  # the console's own page, not Django's bare one
    toast = browser.post("/org/settings/", {"name": "Renamed"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN="x" * 64)
    assert toast.status_code == 403 and toast["X-Hermes-Error"].startswith("This page is out of date")
    cookieless = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "a", "password": "b"})
    assert "did not send this site&#x27;s security cookie" in cookieless.content.decode()
    assert Organization.objects.filter(name="Renamed").count() == 0


def test_base_layout_carries_csrf_once_local_htmx_and_the_nav(client: Client, alice: Any) -> None:
    html = login(client, alice).get("/").content.decode()
    assert html.count('hx-headers=\'{"X-CSRFToken": "') == 1
    assert "/static/vendor/htmx-2.0.11.min.js" in html
    # Nothing is loaded from another host (a CDN): every script and stylesheet is served by Hermes itself. Checked
    # on the attributes, not on the page text, which holds a random CSRF token that may spell anything.
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert 'id="toasts"' in html and 'href="#main"' in html
    assert 'aria-current="page">Dashboard<' in html
    assert "Acme" in html and "alice@acme.test" in html


def test_pages_carry_a_content_security_policy(client: Client, alice: Any) -> None:
    # An injected <script> or inline handler would not run: scripts come from this origin only.
    policy = login(client, alice).get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    # The API's interactive docs start Swagger UI with an inline script: left out of the policy.
    assert "Content-Security-Policy" not in client.get("/api/v1/docs/")


def test_console_404_is_html_and_api_404_is_json(client: Client, alice: Any) -> None:
    login(client, alice)
    page = client.get("/no/such/page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    assert "Page not found" in page.content.decode() and page["X-Hermes-Error"]
    api = client.get("/api/v1/no/such/")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_console_403_names_the_missing_permission(rf: Any, mia: Any) -> None:
    from django.core.exceptions import PermissionDenied

    from apps.core.errors import handler403

    request = rf.get("/org/members/")
    request.user = mia
    response = handler403(request, PermissionDenied("Your role (Member) may not change roles."))
    assert response.status_code == 403 and "may not change roles" in response.content.decode()
    assert response["X-Hermes-Error"] == "Your role (Member) may not change roles."
    api = handler403(rf.get("/api/v1/x"), None)
    assert api.status_code == 403 and b"permission_denied" in api.content


def test_500_page_renders_without_request_context(rf: Any) -> None:
    from apps.core.errors import handler500

    request = rf.get("/agents/")
    request.request_id = "req-1"
    response = handler500(request)
    assert response.status_code == 500 and "req-1" in response.content.decode()
    assert handler500(rf.get("/api/v1/x")).status_code == 500


def test_register_logs_in_and_asks_for_an_org(client: Client) -> None:
    response = client.post(
        "/accounts/register/",
        {"email": "New@Example.test", "name": "New", "password1": "a-long-secret-42", "password2": "a-long-secret-42"},
    )
    assert response.status_code == 302 and response["Location"] == "/orgs/new/"
    assert client.get("/").status_code == 302  # no org yet: sent to create one
    assert client.get("/")["Location"] == "/orgs/new/"


def test_register_shows_precise_errors_and_writes_nothing(client: Client, alice: Any) -> None:
    from django.contrib.auth import get_user_model

    mismatch = client.post(
        "/accounts/register/", {"email": "new@example.test", "password1": "long-secret-1", "password2": "other"}
    )
    assert mismatch.status_code == 422 and "do not match" in mismatch.content.decode()
    taken = client.post(
        "/accounts/register/",
        {"email": "Alice@Acme.test", "password1": "long-secret-12", "password2": "long-secret-12"},
    )
    assert taken.status_code == 422 and "already exists" in taken.content.decode()
    weak = client.post("/accounts/register/", {"email": "new@example.test", "password1": "123", "password2": "123"})
    html = weak.content.decode()
    assert weak.status_code == 422 and "too short" in html and "entirely numeric" in html
    assert get_user_model().objects.count() == 1


def test_login_and_logout(client: Client, alice: Any) -> None:
    bad = client.post("/accounts/login/", {"username": "alice@acme.test", "password": "nope"})
    assert bad.status_code == 200 and "correct email" in bad.content.decode().lower()
    # Emails are compared ignoring case: only the password is case-sensitive, as the message says.
    assert "the password is case-sensitive" in bad.content.decode() and "both fields" not in bad.content.decode()
    good = client.post("/accounts/login/", {"username": "alice@acme.test", "password": "correct-horse-battery"})
    assert good.status_code == 302
    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302
    # The email as the person types it: registration and password reset already match it case-insensitively.
    shouted = client.post("/accounts/login/", {"username": "ALICE@Acme.test", "password": "correct-horse-battery"})
    assert shouted.status_code == 302


def test_password_reset_by_email(
    client: Client, alice: Any, django_capture_on_commit_callbacks: Any, eager_celery: None
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/password-reset/", {"email": "alice@acme.test"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 1
    link = next(word for word in mail.outbox[0].body.split() if "/accounts/password-reset/" in word)
    path = "/accounts/password-reset/" + link.split("/accounts/password-reset/", 1)[1]
    form_page = client.get(path)
    assert form_page.status_code == 200 and "Choose a new password" in form_page.content.decode()
    assert form_page["Referrer-Policy"] == "same-origin"
    weak = client.post(path, {"new_password1": "123", "new_password2": "123"})
    assert weak.status_code == 422 and "too short" in weak.content.decode()
    done = client.post(path, {"new_password1": "another-long-secret-9", "new_password2": "another-long-secret-9"})
    assert done.status_code == 302
    assert client.login(username="alice@acme.test", password="another-long-secret-9")
    # The link works once.
    assert "no longer works" in client.get(path).content.decode()


def test_password_reset_does_not_reveal_accounts(client: Client, django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/password-reset/", {"email": "nobody@example.test"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert mail.outbox == []


def test_password_change(client: Client, alice: Any) -> None:
    client.force_login(alice)
    wrong = client.post(
        "/accounts/password/",
        {"current_password": "nope", "new_password1": "fresh-secret-77", "new_password2": "fresh-secret-77"},
    )
    assert wrong.status_code == 422 and "current password is not correct" in wrong.content.decode()
    ok = client.post(
        "/accounts/password/",
        {
            "current_password": "correct-horse-battery",
            "new_password1": "fresh-secret-77",
            "new_password2": "fresh-secret-77",
        },
    )
    assert ok.status_code == 302
    assert client.get("/").status_code == 200  # still signed in
    alice.refresh_from_db()
    assert alice.check_password("fresh-secret-77")


def test_create_org_makes_the_creator_owner_and_switches_to_it(client: Client, alice: Any) -> None:
    login(client, alice)
    response = client.post("/orgs/new/", {"name": "Initech Labs", "slug": ""})
    assert response.status_code == 302
    org = Organization.objects.get(slug="initech-labs")
    assert Membership.objects.for_org(org).get(user=alice).role == "owner"
    assert "Initech Labs" in client.get("/").content.decode().split("<main", 1)[1]


def test_create_org_refuses_a_taken_slug(client: Client, alice: Any, other_org: Any) -> None:
    login(client, alice)
    response = client.post("/orgs/new/", {"name": "Globex", "slug": "globex"})
    assert response.status_code == 422 and "is taken" in response.content.decode()
    shouted = client.post("/orgs/new/", {"name": "Globex", "slug": "GLOBEX"})  # the same org to a peer
    assert shouted.status_code == 422 and "The slug &#x27;globex&#x27; is taken" in shouted.content.decode()
    underscored = client.post("/orgs/new/", {"name": "QA", "slug": "QA_Org"})
    assert (
        underscored.status_code == 422
        and "use lowercase letters, digits and single hyphens" in underscored.content.decode()
    )
    assert Organization.objects.count() == 2


def test_switch_only_to_own_orgs(client: Client, alice: Any, charlie: Any, other_org: Any) -> None:
    login(client, alice)
    response = client.post("/orgs/switch/", {"org": "globex"}, follow=True)
    assert "not a member" in response.content.decode()
    assert "Acme" in response.content.decode().split("<main", 1)[1]
    Membership.objects.create(organization=other_org, user=alice, role="member")
    response = client.post("/orgs/switch/", {"org": "globex"}, follow=True)
    main = response.content.decode().split("<main", 1)[1]
    assert "Now working in Globex" in main and "you are member" in main
