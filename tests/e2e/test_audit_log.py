"""The organization's audit log in the browser: the action filter swaps the table and the address, Back shows the
filter of the address it comes to, times are local, and long details stay inside the page on a phone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_console_flow import assert_accessible, sign_in

pytestmark = pytest.mark.e2e


def test_filter_back_and_a_phone(page: Any, screenshot: Any, org: Any, alice: Any) -> None:
    from apps.core.audit import record
    from tests.factories import issue_api_key

    key, _ = issue_api_key(alice, org, scopes=["org:audit"], name="siem export")
    record("task.created", org=org, actor=alice, target=org, note="x" * 300)  # one long unbroken word
    record("agent.registered", org=org, actor=alice, target=org, name="Echo")
    sign_in(page, alice.email)
    page.goto("/org/members/")
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url("**/org/audit/")
    assert_accessible(page)
    rows = page.locator("#audit-table tbody tr")
    assert rows.count() == 3
    assert page.get_by_role("link", name=key.display).count() == 1  # the key it was about, on the keys page
    # hermes.js showed the time in local time, the UTC time in its title.
    expect(page.locator("#audit-table time").first).to_have_attribute("title", re.compile("UTC"))

    select = page.get_by_label("Action")
    select.select_option("agent.registered")
    page.wait_for_url("**/org/audit/?action=agent.registered")
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)
    page.wait_for_timeout(1100)  # past a burst of changes: the next choice is its own history entry
    select.select_option("task.created")
    page.wait_for_url("**/org/audit/?action=task.created")
    page.go_back()
    page.wait_for_url("**/org/audit/?action=agent.registered")
    expect(page.locator("#action-filter")).to_have_value("agent.registered")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/org/audit/?action=task.created")
    page.get_by_text("Show").click()  # the details, expanded
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "org-audit")
    page.set_viewport_size({"width": 1280, "height": 860})
    screenshot(page, "org-audit-wide")
