"""Browser flows through the real app (see conftest: uvicorn + Celery worker + Chromium)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def register(page: Any, email: str, password: str = "a-long-secret-42") -> None:
    page.goto("/accounts/register/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name").fill("Erin Example")
    page.locator("#id_password1").fill(password)
    page.locator("#id_password2").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/orgs/new/")


def test_register_and_create_an_org(page: Any, screenshot: Any) -> None:
    page.goto("/accounts/register/")
    screenshot(page, "register")
    page.get_by_role("button", name="Create account").click()
    assert page.locator(".errorlist").first.is_visible()  # an empty form explains itself
    register(page, "erin@example.test")
    screenshot(page, "org-create")
    page.get_by_label("Name").fill("Erin Labs")
    page.get_by_role("button", name="Create organization").click()
    page.wait_for_url("**/")
    assert page.get_by_role("heading", name="Erin Labs").is_visible()
    assert "Organization Erin Labs created" in page.locator("#messages").inner_text()
    screenshot(page, "dashboard")


def sign_in(page: Any, email: str, password: str = "correct-horse-battery") -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def test_api_key_is_shown_once_with_a_copy_button(page: Any, screenshot: Any, alice: Any) -> None:
    sign_in(page, alice.email)
    page.get_by_role("link", name="Organization").click()
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("CI pipeline")
    page.get_by_label("tasks:read", exact=False).check()
    page.get_by_label("tasks:write", exact=False).check()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("[data-plaintext-key]")
    secret.wait_for()
    plaintext = secret.inner_text()
    assert plaintext.startswith("hrm_")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    screenshot(page, "api-keys")
    page.reload()
    assert plaintext not in page.content()
    assert page.get_by_role("cell", name="CI pipeline").count() == 1


def test_a_developer_cannot_change_roles(page: Any, screenshot: Any, org: Any, alice: Any, dave: Any, mia: Any) -> None:
    from apps.orgs.models import Membership

    sign_in(page, dave.email)
    page.goto("/org/members/")
    assert page.get_by_text("Only owners change roles.").is_visible()
    assert page.locator("select[name=role]").count() == 0
    screenshot(page, "members-as-developer")
    target = Membership.objects.for_org(org).get(user=mia)
    # Even a hand-made request (as a script on the page could send) is refused, with a readable toast.
    page.evaluate(
        """(url) => htmx.ajax('POST', url, {target: 'main', values: {role: 'owner'}})""",
        f"/org/members/{target.pk}/role/",
    )
    toast = page.locator(".toast")
    toast.wait_for()
    assert "may not perform 'org:roles'" in toast.inner_text()
    target.refresh_from_db()
    assert target.role == "member"
    assert page.locator("main").inner_text().strip() != ""  # the failed swap left the page as it was
