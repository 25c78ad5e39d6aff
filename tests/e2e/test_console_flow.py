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
