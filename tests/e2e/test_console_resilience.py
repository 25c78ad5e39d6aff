"""The console as people really use it, in the browser: double clicks, Back and Forward over filtered lists,
long unbroken text on a phone, and where the keyboard focus goes after an htmx swap (static/js/hermes.js,
static/css/hermes.css)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.e2e.test_console_flow import sign_in

pytestmark = pytest.mark.e2e

NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"
ACTIVE = "document.activeElement"


@pytest.fixture
def echo(org: Any) -> Any:
    from apps.agents import actions as agent_actions

    return agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")


def make_task(org: Any, agent: Any, state: str, *, said: str = "hello") -> Any:
    """A task as a worker left it, with one agent message in its timeline (no worker runs it)."""
    from apps.tasks.models import Task, TaskEvent

    task = Task.objects.create(
        organization=org, agent=agent, state=state, last_seq=1, input={"role": "user", "parts": [{"text": "hi"}]}
    )
    message = {"role": "agent", "parts": [{"kind": "text", "text": said}]}
    TaskEvent.objects.create(organization=org, task=task, seq=1, kind="message", data=message)
    return task


def test_a_double_submit_of_the_key_form_creates_one_key_and_keeps_its_secret(page: Any, org: Any, alice: Any) -> None:
    from apps.orgs.models import APIKey

    sign_in(page, alice.email)
    page.goto("/org/keys/")
    posts: list[Any] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/org/keys/") else None)
    form = page.locator("#keys-section form[hx-post$='/org/keys/']")
    create = page.get_by_role("button", name="Create key")

    # A second submit while the first is on its way (its answer held back here) sends nothing.
    held: list[Any] = []
    page.route("**/org/keys/", lambda route: held.append(route) if route.request.method == "POST" else route.fallback())
    page.get_by_label("Name").fill("first")
    page.get_by_label("tasks:read", exact=False).check()
    create.click()
    page.locator("#keys-section form[aria-busy=true] button[aria-disabled=true]").wait_for()
    page.keyboard.press("Enter")  # the focus stayed on the button
    page.wait_for_timeout(300)
    assert len(posts) == 1 and len(held) == 1
    held[0].continue_()
    page.unroute("**/org/keys/")
    page.get_by_role("heading", name="Your new key “first”").wait_for()
    assert form.get_attribute("aria-busy") is None and create.get_attribute("aria-disabled") is None

    # A double click whose second click lands on the empty form the first one's answer swapped in: the 422 of that
    # form replaced the section showing the one-time secret.
    page.get_by_label("Name").fill("second")
    page.get_by_label("tasks:read", exact=False).check()
    box = create.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_role("heading", name="Your new key “second”").wait_for()
    box = create.bounding_box()  # the secret pushed the form down: a real double click would follow it
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down(click_count=2)
    page.mouse.up(click_count=2)
    page.wait_for_timeout(300)
    assert len(posts) == 2
    assert page.get_by_role("heading", name="Your new key “second”").is_visible()
    assert page.locator("[data-plaintext-key]").inner_text().startswith("hrm_")
    assert sorted(APIKey.objects.for_org(org).values_list("name", flat=True)) == ["first", "second"]

    # An empty form comes back 422 (outerHTML swap): the keyboard is on its first invalid field, not on <body>.
    create.click()
    page.locator("#id_name[aria-invalid=true]").wait_for()
    assert page.evaluate(f"{ACTIVE}.id") == "id_name"


def test_a_plain_form_sends_once_while_its_answer_is_on_its_way(page: Any, org: Any, alice: Any, echo: Any) -> None:
    """A form the browser submits itself (no htmx), clicked again on a slow answer: it made two tasks."""
    from apps.tasks.models import Task

    sign_in(page, alice.email)
    page.goto(f"/tasks/new/?agent={echo.pk}")
    page.get_by_role("heading", name="Send a task").wait_for()
    page.get_by_label("Message").fill("only once")
    # The second submit comes while the first one's page has not arrived: both in one go, before any answer.
    sent = page.evaluate(
        """() => {
            const form = document.querySelector("main form[method=post]");
            const button = form.querySelector("button[type=submit]");
            const counted = [];
            form.addEventListener("submit", () => counted.push(form.getAttribute("aria-busy")));
            button.click();
            button.click();
            return [counted.length, form.getAttribute("aria-busy"), button.getAttribute("aria-disabled")];
        }"""
    )
    assert sent == [1, "true", "true"]  # the second click's submit stopped before any listener of the form
    page.wait_for_url("**/tasks/*/")
    assert Task.objects.for_org(org).count() == 1


def test_the_focus_stays_in_the_content_an_htmx_swap_replaced(
    page: Any, org: Any, alice: Any, hermes_server: Any, settings: Any
) -> None:
    from apps.agents.actions import assign_demo_agents

    # The invite form's 422 (outerHTML of its section): its first invalid field.
    sign_in(page, alice.email)
    page.goto("/org/members/")
    page.get_by_role("button", name="Send invitation").click()
    page.locator("#invitations [aria-invalid=true]").first.wait_for()
    assert page.evaluate(f"{ACTIVE}.getAttribute('aria-invalid')") == "true"
    assert page.evaluate(f"!!{ACTIVE}.closest('#invitations')")

    # The agent preview's 422 answers for step 1's URL field out of band: the error under it, the keyboard on it.
    page.goto("/agents/register/")
    page.get_by_label("Agent URL").fill("not a url")
    page.get_by_role("button", name="Preview the card").click()
    page.locator("#url-field [aria-invalid=true]").wait_for()
    assert page.evaluate(f"{ACTIVE}.id") == "id_url"
    assert "Enter the agent's URL: http:// or https://" in page.locator("#url-field").inner_text()
    assert page.get_by_label("Agent URL").input_value() == "not a url"

    # "Re-fetch the card" swaps the card holding the button: the keyboard is on the new button, not on <body>.
    settings.HERMES_PUBLIC_URL = hermes_server.base_url  # demo agents' cards name the server's URL
    agent = assign_demo_agents(org=org, by=alice).created[0]
    page.goto(f"/agents/{agent.pk}/")
    page.evaluate("document.getElementById('agent-state').dataset.before = 'swap'")
    page.get_by_role("button", name="Re-fetch the card").focus()
    page.keyboard.press("Enter")
    page.locator("#agent-state:not([data-before])").wait_for()
    assert page.evaluate(f"{ACTIVE}.textContent.trim()") == "Re-fetch the card"
    assert page.evaluate(f"{ACTIVE}.closest('#agent-state') === document.getElementById('agent-state')")


def test_filters_follow_back_and_forward_and_a_burst_of_changes_is_one_step(
    page: Any, org: Any, alice: Any, echo: Any
) -> None:
    from apps.agents import actions as agent_actions

    other = agent_actions.register_agent_manually(org=org, name="Other", url="https://other.example.com/rpc")
    working = make_task(org, echo, "working")
    completed = make_task(org, echo, "completed")
    elsewhere = make_task(org, other, "working")
    sign_in(page, alice.email)
    page.goto("/tasks/")
    status, agent = page.get_by_label("Status"), page.get_by_label("Agent")

    def at(**query: str) -> Any:  # the address bar's query, empty filters left out
        return lambda url: dict(parse_qsl(urlsplit(url).query)) == query

    def rows() -> set[str]:
        return set(page.locator("[data-task-row]").evaluate_all("els => els.map(e => e.dataset.taskRow)"))

    def shows(status_value: str, agent_value: str) -> None:
        page.wait_for_function(
            "([s, a]) => document.querySelector('#id_status').value === s"
            " && document.querySelector('#id_agent').value === a",
            arg=[status_value, agent_value],
        )

    # Arrow keys on the focused select: the list follows each one, the history gets one entry for the burst.
    before = page.evaluate("history.length")
    status.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(120)
    chosen = status.input_value()
    assert chosen
    page.wait_for_url(at(status=chosen))
    page.wait_for_timeout(300)
    assert page.evaluate("history.length") == before + 1

    # Deliberate choices, each its own step; Back and Forward show the filters of the address they come to.
    page.goto("/tasks/")
    status.select_option("working")
    page.wait_for_url(at(status="working"))
    page.wait_for_timeout(1100)  # past the burst: a new entry
    agent.select_option(str(echo.pk))
    page.wait_for_url(at(status="working", agent=str(echo.pk)))
    page.wait_for_timeout(1100)
    status.select_option("completed")
    page.wait_for_url(at(status="completed", agent=str(echo.pk)))
    assert rows() == {str(completed.pk)}

    page.go_back()
    page.wait_for_url(at(status="working", agent=str(echo.pk)))
    shows("working", str(echo.pk))
    assert rows() == {str(working.pk)}
    page.go_back()
    page.wait_for_url(at(status="working"))
    shows("working", "")
    assert rows() == {str(working.pk), str(elsewhere.pk)}
    page.go_forward()
    page.wait_for_url(at(status="working", agent=str(echo.pk)))
    shows("working", str(echo.pk))
    # Each restore ran the live script again: the sockets of the replaced lists are closed, one remains live
    # (they piled up, one more /ws/org/ per Back).
    page.wait_for_function("window.hermesLiveSockets.filter((live) => !live.closedForGood).length === 1")

    # An address htmx kept no snapshot of is loaded as a whole page (it was the list fragment alone, as the body).
    page.evaluate("sessionStorage.removeItem('htmx-history-cache')")
    page.go_back()
    page.wait_for_url(at(status="working"))
    page.get_by_role("heading", name="Tasks", exact=True).wait_for()
    shows("working", "")
    assert page.get_by_role("navigation", name="Main").is_visible()

    # The same for a search box (the marketplace's, searching as one types).
    page.goto("/marketplace/")
    search = page.locator("#id_q")
    search.fill("echo")
    page.wait_for_url(at(q="echo"))
    page.wait_for_timeout(1100)
    search.fill("nothing like it")
    page.wait_for_url(at(q="nothing like it"))
    page.go_back()
    page.wait_for_url(at(q="echo"))
    page.wait_for_function("document.querySelector('#id_q').value === 'echo'")


def test_long_unbroken_text_stays_inside_the_page(
    page: Any, screenshot: Any, org: Any, alice: Any, mia: Any, echo: Any
) -> None:
    from django.contrib.auth import get_user_model

    org.name = "Acme" + "x" * 116
    org.save()
    get_user_model().objects.filter(pk=alice.pk).update(name="Alice" + "y" * 145)
    task = make_task(org, echo, "completed", said="z" * 3000)
    sign_in(page, alice.email)

    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"/tasks/{task.pk}/")
        page.locator("[data-events] li").wait_for()
        page.locator("[data-watchers] li", has_text="Aliceyyy").wait_for()  # presence: who watches, by name
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"task timeline at {width}px"
        screenshot(page, f"long-text-task-{width}")
        page.goto("/org/members/")
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"members at {width}px"
        page.goto("/org/settings/")  # its "Delete <org name>" button
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"settings at {width}px"
    # The members table keeps its columns inside its card at 1280; on a phone it may scroll inside the card.
    page.set_viewport_size({"width": 1280, "height": 844})
    page.goto("/org/members/")
    assert page.evaluate("(w => w.scrollWidth <= w.clientWidth)(document.querySelector('#members-h ~ .table-wrap'))")

    # The flash message naming the org, on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has_text=mia.email).get_by_role("button", name="Remove").click()
    page.locator("#messages .alert", has_text="was removed from Acme").wait_for()
    assert page.evaluate(NO_SIDEWAYS_SCROLL), "flash message at 390px"
    screenshot(page, "long-text-members-390")


# The header's buttons each on one line (their text as wide as it is on one line), and the org switcher no wider
# than its max-width: "Switch" broke into "Swit / ch", and a long org name's select filled the header row.
HEADER_FITS = """() => {
  const problems = [];
  for (const button of document.querySelectorAll('.header-tools .btn')) {
    const range = document.createRange();
    range.selectNodeContents(button);
    if (range.getClientRects().length > 1) problems.push('wrapped: ' + button.textContent.trim());
    if (button.scrollWidth > button.clientWidth) problems.push('clipped: ' + button.textContent.trim());
  }
  const select = document.querySelector('#org-switcher');
  const rem = parseFloat(getComputedStyle(document.documentElement).fontSize);
  const wide = select ? select.getBoundingClientRect().width : 0;
  if (wide > 18 * rem + 1) problems.push('switcher ' + wide);
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push('page scrolls sideways');
  return problems;
}"""


def test_the_header_keeps_its_buttons_whole_beside_a_long_org_name(
    page: Any, screenshot: Any, org: Any, other_org: Any, alice: Any
) -> None:
    from apps.orgs.models import Membership

    Membership.objects.create(organization=other_org, user=alice, role="member")
    org.name = "Acme " + "Interplanetary Logistics " * 4 + "x" * 15  # 120 characters, the most a name may have
    org.save()
    sign_in(page, alice.email)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto("/tasks/")
        assert page.evaluate(HEADER_FITS) == [], f"header at {width}px"
        switch = page.get_by_role("button", name="Switch")
        assert switch.bounding_box()["height"] < 40, f"Switch at {width}px"
        screenshot(page, f"header-long-org-{width}")


def test_a_row_removed_with_the_keyboard_leaves_the_focus_in_its_table(
    page: Any, org: Any, alice: Any, bob: Any, dave: Any, mia: Any
) -> None:
    from apps.orgs.models import APIKey
    from tests.factories import issue_api_key

    sign_in(page, alice.email)
    page.goto("/org/members/")
    page.on("dialog", lambda dialog: dialog.accept())
    # Remove dave (rows by email: alice, bob, dave, mia): Enter on his "Remove", the confirmation accepted. The row
    # goes (an empty swap) and the keyboard is on the next row's "Remove" (mia's), not on <body>.
    page.locator("tr", has_text=dave.email).get_by_role("button", name="Remove").focus()
    page.keyboard.press("Enter")
    page.locator("tr", has_text=dave.email).wait_for(state="detached")
    assert page.evaluate(f"{ACTIVE}.textContent.trim()") == "Remove"
    assert mia.email in page.evaluate(f"{ACTIVE}.closest('tr').textContent")
    # The last row: the one above it.
    page.keyboard.press("Enter")
    page.locator("tr", has_text=mia.email).wait_for(state="detached")
    assert bob.email in page.evaluate(f"{ACTIVE}.closest('tr').textContent")
    # No "Remove" left (alice's own row says "Leave"): the table's heading, not "Leave".
    page.keyboard.press("Enter")
    page.locator("tr", has_text=bob.email).wait_for(state="detached")
    assert page.evaluate(f"[{ACTIVE}.tagName, {ACTIVE}.textContent.trim()]") == ["H2", "Members"]

    # Revoking a key (the keys section swapped whole, the revoked row without its button): the next key's "Revoke".
    issue_api_key(alice, org, name="first", scopes=["tasks:read"])
    issue_api_key(alice, org, name="second", scopes=["tasks:read"])
    page.goto("/org/keys/")
    page.locator("#keys-section tr", has_text="first").get_by_role("button", name="Revoke").focus()
    page.keyboard.press("Enter")
    page.locator("#keys-section tr", has_text="first").locator(".badge-revoked").wait_for()
    assert page.evaluate(f"{ACTIVE}.textContent.trim()") == "Revoke"
    assert "second" in page.evaluate(f"{ACTIVE}.closest('tr').textContent")
    assert APIKey.objects.for_org(org).get(name="first").revoked_at is not None
