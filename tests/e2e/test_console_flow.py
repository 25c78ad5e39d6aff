"""Browser flows through the real app (see conftest: uvicorn + Celery worker + Chromium)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def register(page: Any, email: str, password: str = "a-long-secret-42") -> None:
    page.goto("/accounts/register/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name").fill("Erin Example")
    page.locator("#id_password1").fill(password)
    page.locator("#id_password2").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/orgs/new/")


# Every visible form control has an accessible name, every image an alt text, and the page one <main> and <h1>.
A11Y_CHECK = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const labelled = (el.labels && el.labels.length)
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
  }
  for (const img of document.querySelectorAll('img:not([alt])')) problems.push('img without alt ' + img.src);
  if (document.querySelectorAll('main').length !== 1) problems.push('main landmark count');
  if (document.querySelectorAll('h1').length !== 1) problems.push('h1 count ' + document.querySelectorAll('h1').length);
  return problems;
}"""


def assert_accessible(page: Any) -> None:
    problems = page.evaluate(A11Y_CHECK)
    assert not problems, f"{page.url}: {problems}"


def test_new_user_from_sign_up_to_a_live_task(page: Any, screenshot: Any, hermes_server: Any) -> None:
    page.goto("/accounts/register/")
    assert_accessible(page)
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
    assert_accessible(page)
    screenshot(page, "dashboard")

    # An API key, shown once.
    page.get_by_role("link", name="Create an API key").click()
    page.get_by_label("Name").fill("erin-script")
    for scope in ("agents:read", "tasks:read", "tasks:write"):
        page.get_by_label(scope, exact=False).check()
    page.get_by_role("button", name="Create key").click()
    plaintext = page.locator("[data-plaintext-key]").inner_text()
    assert plaintext.startswith("hrm_")
    assert_accessible(page)

    # An agent, registered by its URL after previewing its card.
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("link", name="Register an agent").click()
    page.get_by_label("Agent URL").fill(hermes_server.url("/demo-agents/echo/"))
    page.get_by_role("button", name="Preview the card").click()
    page.locator("#preview [data-card-name]").wait_for()
    assert_accessible(page)
    page.get_by_role("button", name="Register this agent").click()
    page.wait_for_url(re.compile(r"/agents/[0-9a-f-]{36}/$"))
    assert_accessible(page)

    agent_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # A task from the console, watched live to completion.
    page.get_by_role("link", name="Send a task").click()
    page.get_by_label("Message").fill("hello from Erin")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
    wait_for_task(page, "completed")
    assert "hello from Erin" in page.locator("[data-events]").inner_text()

    # And one through the API with the key generated above, watched on the live list, then its timeline.
    page.goto("/tasks/")
    page.locator('#tasks-live [data-live-label]:text("Live")').wait_for()
    response = httpx.post(
        hermes_server.url("/api/v1/tasks"),
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"agent": agent_id, "input": {"parts": [{"text": "hello from Erin's script"}]}},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    row = page.locator(f'[data-task-row="{response.json()["id"]}"]')
    row.locator('[data-task-state][data-state="completed"]').wait_for(timeout=30_000)
    row.get_by_role("link").click()
    wait_for_task(page, "completed")
    assert "hello from Erin's script" in page.locator("[data-events]").inner_text()
    assert_accessible(page)

    # The same page on a phone-sized screen stays usable (no horizontal overflow of the layout).
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "task-detail-mobile")


def wait_for_task(page: Any, state: str, timeout: float = 30_000) -> None:
    """The badge shows `state` and the socket has delivered the timeline so far (the page may have been rendered
    with a state the events have not reached the browser for yet)."""
    page.locator(f'h1 [data-task-state][data-state="{state}"]').wait_for(timeout=timeout)
    page.locator('[data-task-timeline][data-synced="true"]').wait_for(timeout=timeout)


def sign_in(page: Any, email: str, password: str = "correct-horse-battery") -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    # The sign-in's own navigation, waited for: "**/" also matches the login page, so a test could go on (and open
    # another page) before the sign-in had answered, and land on the login form again.
    with page.expect_navigation():
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

    # Rotating "Immediately" ends the key at once: it asks first (only Revoke did), and a "no" changes nothing.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row = page.locator("tbody tr", has_text="CI pipeline")
    row.get_by_label("Old key keeps working for").select_option(label="Immediately")
    row.get_by_role("button", name="Rotate").click()
    page.wait_for_timeout(300)
    assert asked and "stop working immediately" in asked[0]
    assert page.locator("[data-plaintext-key]").count() == 0
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Rotate").click()
    page.locator("[data-plaintext-key]").wait_for()  # the successor, shown once


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
    assert "may not change member roles and manage owners (org:roles); that takes an Owner" in toast.inner_text()
    target.refresh_from_db()
    assert target.role == "member"
    assert page.locator("main").inner_text().strip() != ""  # the failed swap left the page as it was


def test_a_refused_role_change_shows_the_role_that_stayed(page: Any, org: Any, alice: Any) -> None:
    from apps.orgs.models import Membership

    sign_in(page, alice.email)
    page.goto("/org/members/")
    own = Membership.objects.for_org(org).get(user=alice)
    select = page.locator(f"#role-{own.pk}")
    select.select_option("member")  # the only owner demoting herself: refused (409)
    page.locator(f"#member-{own.pk}").get_by_role("button", name="Change role").click()
    page.locator(".toast").wait_for()
    assert "at least one owner" in page.locator(".toast").inner_text()
    expect(page.locator(f"#role-{own.pk}")).to_have_value("owner")  # it kept showing "member"


def test_register_a_demo_agent_by_url_with_a_preview(page: Any, screenshot: Any, hermes_server: Any, bob: Any) -> None:
    from apps.agents.models import Agent

    sign_in(page, bob.email)
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("link", name="Register an agent").click()
    page.get_by_label("Agent URL").fill(hermes_server.url("/demo-agents/echo/"))
    page.get_by_role("button", name="Preview the card").click()
    preview = page.locator("#preview")
    preview.get_by_text("Repeats the input").wait_for()
    assert preview.locator("[data-card-name]").inner_text().startswith("Hermes Echo")
    assert not Agent.objects.unscoped("e2e check").exists()  # previewing stores nothing
    screenshot(page, "agent-register-preview")
    page.get_by_role("button", name="Register this agent").click()
    page.wait_for_url(re.compile(r"/agents/[0-9a-f-]{36}/$"))
    assert page.get_by_role("heading", name="Hermes Echo").is_visible()
    assert "Agent Hermes Echo registered" in page.locator("#messages").inner_text()
    screenshot(page, "agent-detail")
    page.get_by_role("link", name="Marketplace").click()
    page.get_by_label("Search public agents").fill("echo")
    page.get_by_text("No public agent matches").wait_for()  # it is private until listed


def test_a_dead_letter_is_requeued_from_the_console(
    page: Any, screenshot: Any, org: Any, other_org: Any, bob: Any
) -> None:
    from apps.federation import actions
    from apps.federation.models import Effect, Outbox

    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    sign_in(page, bob.email)
    page.goto("/federation/outbox/")
    page.get_by_label("Recipient").fill("globex")
    page.get_by_label("Payload").fill('{"text": "quarterly report"}')
    page.get_by_role("button", name="Send").click()
    page.get_by_text("queued for globex").wait_for()
    # The Celery worker delivers in-process; globex accepts nothing from acme yet (its default policy denies):
    # a permanent 403, straight to the DLQ.
    page.goto("/federation/dlq/")
    row = page.locator("[data-dead-letter]")
    for _ in range(50):
        if row.count():
            break
        page.wait_for_timeout(200)
        page.reload()
    assert row.count() == 1
    screenshot(page, "dead-letters")
    # Fix the cause (globex now accepts acme), then requeue from the console.
    actions.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)
    # Each button asks its own question, and "no" sends nothing (both used to run unasked).
    asked: list[str] = []
    answers = iter([False, True])
    page.on("dialog", lambda d: (asked.append(d.message), d.accept() if next(answers) else d.dismiss()))
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Discard selected").click()
    page.wait_for_timeout(300)
    assert asked == ["Discard the selected messages for good? This cannot be undone."] and row.count() == 1
    page.get_by_role("button", name="Requeue selected").click()
    page.get_by_text("1 message requeued").wait_for()
    assert asked[1] == "Requeue the selected messages for delivery?"
    assert page.get_by_text("The dead-letter queue is empty.").is_visible()
    outbox = Outbox.objects.for_org(org).get()
    for _ in range(50):
        outbox.refresh_from_db()
        if outbox.status == "delivered":
            break
        page.wait_for_timeout(200)
    assert outbox.status == "delivered", outbox.last_error
    page.goto("/federation/audit/")
    assert page.get_by_role("cell", name="Requeued from the DLQ").count() == 1
    screenshot(page, "federation-audit")


def test_a_form_with_errors_puts_the_keyboard_on_the_first_invalid_field(page: Any, org: Any, alice: Any) -> None:
    from apps.agents.actions import register_agent_manually

    register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")
    sign_in(page, alice.email)
    page.goto("/tasks/new/")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector('[aria-invalid="true"]')
    # It stayed on the page itself (<body>), so a keyboard or screen-reader user had to hunt for the error.
    expect(page.locator(":focus")).to_have_attribute("aria-invalid", "true")


def test_no_page_scrolls_sideways_on_a_phone(page: Any, org: Any, alice: Any) -> None:
    from django.utils import timezone

    from apps.core.permissions import SCOPES
    from apps.orgs.actions import create_api_key, rotate_api_key
    from apps.orgs.models import APIKey
    from tests.factories import access_for

    for n in range(3):  # rows with their rotate/revoke controls, the widest of the console's tables
        create_api_key(access=access_for(alice, org), name=f"key {n}", scopes=sorted(SCOPES))
    rotate_api_key(access=access_for(alice, org), key=APIKey.objects.for_org(org).first())  # "rotated to …"
    APIKey.objects.for_org(org).update(last_used_at=timezone.now(), last_used_ip="203.0.113.254")
    sign_in(page, alice.email)
    # On a laptop the keys table and its actions are in view: beside the form, they were cut off in the
    # table's scroll box (779 px of table in 718).
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto("/org/keys/")
    wrap = page.locator(".table-wrap")
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth")
    right = wrap.bounding_box()["x"] + wrap.bounding_box()["width"]
    for button in page.get_by_role("button", name=re.compile("^(Rotate|Revoke)$")).all():
        assert button.bounding_box()["x"] + button.bounding_box()["width"] <= right
    page.set_viewport_size({"width": 390, "height": 844})
    for path in (
        *("/org/keys/", "/org/members/", "/federation/outbox/", "/federation/policies/", "/federation/audit/"),
        *("/agents/", "/tasks/"),
    ):
        page.goto(path)
        # Wide tables scroll inside their card; the page itself must not (it was 851 px wide on /org/keys/).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path


def test_a_password_is_reset_from_the_emailed_link(page: Any, alice: Any) -> None:
    # Only a browser shows this: with `Referrer-Policy: no-referrer` on the page, Chromium posted its form with
    # `Origin: null` and Django's CSRF check refused every reset with a 403.
    from urllib.parse import urlsplit

    from apps.accounts.actions import password_reset_url

    page.goto(urlsplit(password_reset_url(alice)).path)  # the page base URL is the test server
    page.locator("#id_new_password1").fill("a-brand-new-secret-7")
    page.locator("#id_new_password2").fill("a-brand-new-secret-7")
    page.get_by_role("button", name="Set the password").click()
    page.wait_for_url("**/accounts/password-reset/done/")
    sign_in(page, alice.email, "a-brand-new-secret-7")


def test_a_tab_left_on_another_org_acts_on_nothing(page: Any, org: Any, other_org: Any, alice: Any) -> None:
    from apps.orgs.models import Membership, Organization

    Membership.objects.create(organization=other_org, user=alice, role="owner")
    sign_in(page, alice.email)
    page.locator("#org-switcher").select_option("acme")
    page.get_by_role("button", name="Switch").click()
    page.goto("/org/settings/")  # this tab shows Acme's settings (a plain form: hermes.js adds the org it shows)
    other_tab = page.context.new_page()
    other_tab.goto("/")
    other_tab.locator("#org-switcher").select_option("globex")
    other_tab.get_by_role("button", name="Switch").click()
    other_tab.wait_for_load_state()
    page.get_by_label("Name").fill("Renamed from a stale tab")
    page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert "Nothing was done" in page.locator("#messages").inner_text()
    assert {o.name for o in Organization.objects.all()} == {"Acme", "Globex"}


def _in_both_orgs(alice: Any, org: Any, other_org: Any) -> dict[str, Any]:
    """alice works in acme and globex, each with an agent named Echo; this tab shows acme, another globex."""
    from apps.agents.actions import register_agent_manually
    from apps.orgs.models import Membership

    Membership.objects.create(organization=other_org, user=alice, role="owner")
    return {
        each.slug: register_agent_manually(org=each, name="Echo", url="https://agent.example.com/rpc")
        for each in (org, other_org)
    }


def _switch_in_another_tab(page: Any, slug: str) -> None:
    other_tab = page.context.new_page()
    other_tab.goto("/")
    other_tab.locator("#org-switcher").select_option(slug)
    other_tab.get_by_role("button", name="Switch").click()
    other_tab.wait_for_load_state()
    other_tab.close()


def test_a_tab_left_on_another_org_lists_nothing_of_the_new_one(
    page: Any, org: Any, other_org: Any, alice: Any
) -> None:
    from tests.e2e.test_console_resilience import make_task

    echoes = _in_both_orgs(alice, org, other_org)
    ours, theirs = make_task(org, echoes["acme"], "working"), make_task(other_org, echoes["globex"], "working")
    sign_in(page, alice.email)
    page.locator("#org-switcher").select_option("acme")
    page.get_by_role("button", name="Switch").click()
    page.goto("/tasks/")
    page.locator(f'[data-task-row="{ours.pk}"]').wait_for()
    _switch_in_another_tab(page, "globex")
    # The status filter (an htmx GET from acme's page): it listed globex's tasks under "Acme (Owner)".
    page.get_by_label("Status").select_option("working")
    toast = page.locator("#toasts [role=alert]", has_text="switched to Globex")
    toast.wait_for()
    assert "this page was showing Acme, but you have switched to Globex" in toast.inner_text()
    assert page.locator(f'[data-task-row="{ours.pk}"]').is_visible()
    assert page.locator(f'[data-task-row="{theirs.pk}"]').count() == 0
    # The same refusal again (the live list, a poll) keeps one toast on screen rather than stacking them.
    page.get_by_label("Status").select_option("")
    page.wait_for_timeout(300)
    assert page.locator("#toasts [role=alert]").count() == 1
    # Reloaded, the page is globex's, header and list alike.
    page.reload()
    page.locator(f'[data-task-row="{theirs.pk}"]').wait_for()
    assert page.locator("#org-switcher option:checked").inner_text().startswith("Globex")


def test_a_message_refused_because_the_org_changed_is_kept(page: Any, org: Any, other_org: Any, alice: Any) -> None:
    from apps.tasks.models import Task

    echoes = _in_both_orgs(alice, org, other_org)
    sign_in(page, alice.email)
    page.locator("#org-switcher").select_option("acme")
    page.get_by_role("button", name="Switch").click()
    page.goto("/tasks/new/")
    page.get_by_label("Agent").select_option(str(echoes["acme"].pk))
    page.get_by_label("Message").fill("A long message\nmeant for Acme's agent")
    _switch_in_another_tab(page, "globex")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    # Back on "Send a task" (now globex's), refused. What was typed is kept for acme, not put into globex's form,
    # where one more click sent it to globex's agent.
    assert "Nothing was done" in page.locator("#messages").inner_text()
    message = page.get_by_label("Message")
    assert message.input_value() == ""
    assert page.locator("[data-draft-waiting]").count() == 1
    assert page.get_by_label("Agent").input_value() != str(echoes["acme"].pk)  # globex offers no acme agent
    # As the message suggests, switching back: acme's page, with the message and the agent chosen for it.
    page.locator("#org-switcher").select_option("acme")
    with page.expect_navigation():
        page.get_by_role("button", name="Switch").click()
    assert page.url.endswith("/tasks/new/")
    assert message.input_value() == "A long message\nmeant for Acme's agent"
    assert page.get_by_label("Agent").input_value() == str(echoes["acme"].pk)
    assert not Task.objects.unscoped("no org may have it").exists()
    # Sent, it is acme's; the page after it (the task) fills nothing in, nor does the form when opened again.
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/tasks/*/")
    sent = Task.objects.for_org(org).get().input["parts"][0]["text"]
    assert sent.replace("\r\n", "\n") == "A long message\nmeant for Acme's agent"  # a form sends CRLF
    page.goto("/tasks/new/")
    assert page.get_by_label("Message").input_value() == ""
