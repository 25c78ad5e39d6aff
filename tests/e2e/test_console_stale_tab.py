"""In the browser: a task page whose session switched org in another tab (static/js/live.js, 4409), and where the
keyboard goes when a row's button leaves no row of its kind (static/js/hermes.js)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_console_flow import sign_in
from tests.e2e.test_console_resilience import ACTIVE, make_task

pytestmark = pytest.mark.e2e


def test_a_reconnect_after_an_org_switch_in_another_tab_says_so(
    page: Any, org: Any, other_org: Any, alice: Any
) -> None:
    from apps.agents import actions as agent_actions
    from apps.orgs.models import Membership

    Membership.objects.create(organization=other_org, user=alice, role="member")
    agent = agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")
    task = make_task(org, agent, "working")
    sign_in(page, alice.email)
    page.goto(f"/tasks/{task.pk}/")
    page.locator('[data-live-label]:text("Live")').wait_for()
    # Another tab switches the session to Globex; then this tab's socket drops and reconnects.
    other = page.context.new_page()
    other.goto("/tasks/")
    other.locator("#org-switcher").select_option("globex")
    with other.expect_navigation():
        other.get_by_role("button", name="Switch").click()
    page.locator("[data-task-timeline]").dispatch_event("hermes:drop")
    page.locator("[data-task-timeline][data-live-state=closed]").wait_for()
    said = (
        "Live updates stopped: this page belongs to the organization Acme, but you have switched to Globex since "
        "(in another tab). Reload the page to switch back to Acme and follow this task live."
    )
    assert page.locator("[data-live-label]").inner_text() == said
    assert page.locator("#toasts [role=alert]").inner_text().startswith(said)


def test_the_last_row_of_its_kind_leaves_the_focus_on_its_sections_heading(page: Any, org: Any, alice: Any) -> None:
    from apps.federation import actions as federation_actions
    from tests.factories import issue_api_key

    issue_api_key(alice, org, name="only", scopes=["tasks:read"])
    for name in ("Globex", "Initech"):
        federation_actions.create_contact(org=org, name=name, address=f"{name.lower()}@berlin")
    sign_in(page, alice.email)
    page.on("dialog", lambda dialog: dialog.accept())
    # The only key revoked: its row stays, without "Revoke"; the keyboard goes to "Keys", not the section's <div>.
    page.goto("/org/keys/")
    page.locator("#keys-section tr", has_text="only").get_by_role("button", name="Revoke").focus()
    page.keyboard.press("Enter")
    page.locator("#keys-section .badge-revoked").wait_for()
    assert page.evaluate(f"[{ACTIVE}.tagName, {ACTIVE}.textContent.trim()]") == ["H2", "Keys"]
    # Contacts (rows without ids, the whole panel swapped): the next row's "Remove", then the address book's heading.
    page.goto("/federation/contacts/")
    page.locator("tr", has_text="Globex").get_by_role("button", name="Remove").focus()
    page.keyboard.press("Enter")
    page.locator("tr", has_text="Globex").wait_for(state="detached")
    assert page.evaluate(f"{ACTIVE}.textContent.trim()") == "Remove"
    assert "Initech" in page.evaluate(f"{ACTIVE}.closest('tr').textContent")
    page.keyboard.press("Enter")
    page.locator("tr", has_text="Initech").wait_for(state="detached")
    assert page.evaluate(f"[{ACTIVE}.tagName, {ACTIVE}.textContent.trim()]") == ["H2", "Address book"]
