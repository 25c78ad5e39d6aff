"""Tasks in the browser: send from the console and through the API with a generated key, watch the live
timeline to completion, resume after a dropped socket without gaps, cancel, presence, and the quota 429."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.e2e.test_console_flow import assert_accessible, sign_in, wait_for_task

pytestmark = pytest.mark.e2e

TERMINAL = ("completed", "failed", "canceled", "rejected")


@pytest.fixture
def demo_agents(org: Any, bob: Any, hermes_server: Any, settings: Any) -> dict[str, Any]:
    from apps.agents.actions import assign_demo_agents

    # Demo agents' cards name this instance's public URL: the server's, not this test process's default.
    settings.HERMES_PUBLIC_URL = hermes_server.base_url
    result = assign_demo_agents(org=org, by=bob)
    return {agent.demo_key: agent for agent in result.created}


def timeline_seqs(page: Any) -> list[int]:
    return [int(s) for s in page.locator("[data-events] li").evaluate_all("els => els.map(e => e.dataset.seq)")]


wait_state = wait_for_task


def test_send_from_the_console_and_through_the_api(
    page: Any, screenshot: Any, hermes_server: Any, org: Any, bob: Any, demo_agents: dict[str, Any]
) -> None:
    from tests.factories import issue_api_key

    sign_in(page, bob.email)
    # Times show in the viewer's zone (hermes.js), all in one format: far from the server's UTC to tell them apart.
    page.context.new_cdp_session(page).send("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    # The list is open while tasks are sent: its statuses update live over /ws/org/.
    page.goto("/tasks/")
    page.locator('[data-live-label]:text("Live")').wait_for()

    page.get_by_role("link", name="Send a task").click()
    page.get_by_label("Agent").select_option(label="Hermes Echo (demo-echo)")
    page.get_by_label("Message").fill("hello from the console")
    assert_accessible(page)
    screenshot(page, "task-send")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
    wait_state(page, "completed")
    kinds = page.locator("[data-events] li").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds[0] == "state" and "artifact" in kinds and kinds[-1] == "state"
    assert timeline_seqs(page) == list(range(1, len(kinds) + 1))  # every event once, in order
    assert "hello from the console" in page.locator("[data-events]").inner_text()
    assert page.locator("[data-cancel-task]").is_hidden()
    # The About card and the timeline: local time, one 24-hour format (they were UTC and a 12-hour local time).
    sent = page.locator("[data-task-about] time").first
    utc = datetime.fromisoformat(sent.get_attribute("datetime"))
    assert sent.inner_text() == f"{utc.astimezone(ZoneInfo('Asia/Kolkata')):%Y-%m-%d %H:%M:%S}"
    first_event = page.locator("[data-events] li time").first
    event_utc = datetime.fromisoformat(first_event.get_attribute("datetime").replace("Z", "+00:00"))
    assert first_event.inner_text() == f"{event_utc.astimezone(ZoneInfo('Asia/Kolkata')):%H:%M:%S}"
    screenshot(page, "task-detail-completed")

    # Through the API with a key, while the list page watches.
    _, plaintext = issue_api_key(bob, org, scopes=["tasks:read", "tasks:write"])
    page.goto("/tasks/")
    page.locator('[data-live-label]:text("Live")').wait_for()
    response = httpx.post(
        hermes_server.url("/api/v1/tasks"),
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"agent": str(demo_agents["echo"].pk), "input": {"parts": [{"text": "hello from the API"}]}},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    row = page.locator(f'[data-task-row="{task_id}"]')
    row.wait_for()  # the new task appeared without a reload
    row.locator('[data-task-state][data-state="completed"]').wait_for(timeout=30_000)
    screenshot(page, "task-list-live")

    # Filtered to failed tasks, a live refresh keeps the filter: it re-fetched the page's first query (every
    # task) while the select still said "Failed".
    page.get_by_label("Status").select_option("failed")
    row.wait_for(state="detached")
    with page.expect_response(lambda r: "/tasks/?" in r.url and r.request.headers.get("hx-request")) as refreshed:
        httpx.post(
            hermes_server.url("/api/v1/tasks"),
            headers={"Authorization": f"Bearer {plaintext}"},
            json={"agent": str(demo_agents["echo"].pk), "input": {"parts": [{"text": "not a failure"}]}},
            timeout=10,
        )  # a task not on the page: the list refreshes
    assert "status=failed" in refreshed.value.url
    page.wait_for_timeout(300)  # the swap
    assert page.locator("[data-task-row]").count() == 0 and page.get_by_label("Status").input_value() == "failed"
    # Filtered to working tasks, a row whose task moves on leaves the list (its badge changed and it stayed).
    page.get_by_label("Status").select_option("working")
    slow = httpx.post(
        hermes_server.url("/api/v1/tasks"),
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"agent": str(demo_agents["slow"].pk), "input": {"parts": [{"data": {"seconds": 20}}]}},
        timeout=10,
    ).json()["id"]
    working = page.locator(f'[data-task-row="{slow}"]')
    working.wait_for(timeout=20_000)
    auth = {"Authorization": f"Bearer {plaintext}"}
    httpx.post(hermes_server.url(f"/api/v1/tasks/{slow}/cancel"), headers=auth, timeout=10)
    deadline = time.monotonic() + 20
    while httpx.get(hermes_server.url(f"/api/v1/tasks/{slow}"), headers=auth).json()["status"] != "canceled":
        assert time.monotonic() < deadline, "the slow task was not canceled"
        time.sleep(0.2)
    working.wait_for(state="detached", timeout=5_000)  # at the canceled status, not at some later refresh
    page.get_by_label("Status").select_option("")
    row.get_by_role("link").click()
    wait_state(page, "completed")
    assert "hello from the API" in page.locator("[data-events]").inner_text()


def test_a_refresh_read_before_the_last_status_does_not_set_the_list_back(
    page: Any, hermes_server: Any, org: Any, bob: Any, demo_agents: dict[str, Any]
) -> None:
    """The status of a task the list does not show yet makes it refresh; when "completed" arrives while that
    refresh is in flight, the refreshed rows were read before it. Here the refresh is held until the task is done
    and then answered with the list as it was read at "submitted": the row must still end up completed."""
    from tests.factories import issue_api_key

    _, plaintext = issue_api_key(bob, org, scopes=["tasks:read", "tasks:write"])
    sign_in(page, bob.email)
    page.goto("/tasks/")
    page.locator('[data-live-label]:text("Live")').wait_for()
    held: list[Any] = []
    page.route(
        re.compile(r"/tasks/(\?.*)?$"),
        lambda route: held.append(route) if route.request.headers.get("hx-request") else route.continue_(),
    )
    response = httpx.post(
        hermes_server.url("/api/v1/tasks"),
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"agent": str(demo_agents["echo"].pk), "input": {"parts": [{"text": "race"}]}},
        timeout=10,
    )
    task_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while (
        httpx.get(
            hermes_server.url(f"/api/v1/tasks/{task_id}"), headers={"Authorization": f"Bearer {plaintext}"}, timeout=10
        ).json()["status"]
        != "completed"
    ):
        assert time.monotonic() < deadline, "the echo task did not complete"
        page.wait_for_timeout(100)
    page.wait_for_timeout(1000)  # the page hears "completed" (a socket message) while the refresh is held
    assert held, "the list did not refresh for the new task"
    stale = held[0].fetch()
    row = re.compile(r'(<tr data-task-row="' + task_id + r'">.*?</tr>)', re.S)
    body = row.sub(
        lambda m: re.sub(r'data-seq="\d+"', 'data-seq="1"', m.group(1)).replace("completed", "submitted"),
        stale.text(),
    )
    assert 'data-state="submitted"' in body
    held[0].fulfill(response=stale, body=body)
    badge = page.locator(f'[data-task-row="{task_id}"] [data-task-state]')
    badge.wait_for()
    page.locator(f'[data-task-row="{task_id}"] [data-task-state][data-state="completed"]').wait_for(timeout=5_000)
    page.unroute_all(behavior="ignoreErrors")


def test_timeline_resumes_after_a_dropped_socket_and_cancel_stops_the_slow_agent(
    browser: Any,
    page: Any,
    screenshot: Any,
    hermes_server: Any,
    org: Any,
    alice: Any,
    bob: Any,
    demo_agents: dict[str, Any],
) -> None:
    slow = demo_agents["slow"]
    sign_in(page, bob.email)
    # Sent through the console: the server enqueues it for its own worker.
    page.goto(f"/tasks/new/?agent={slow.pk}")
    page.get_by_role("heading", name="Send a task").wait_for()  # signed in, on the form
    page.get_by_label("Structured data", exact=False).fill('{"seconds": 20}')
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
    task_path = page.url.split(hermes_server.base_url, 1)[1]
    wait_state(page, "working")
    page.locator("[data-events] li[data-kind=progress]").first.wait_for(timeout=20_000)

    # Alice opens the same task: both show up as watchers.
    other = browser.new_context(base_url=hermes_server.base_url)
    alice_page = other.new_page()
    sign_in(alice_page, alice.email)
    alice_page.goto(task_path)
    page.locator("[data-watchers] li", has_text=alice.name).wait_for()
    assert page.locator("[data-watchers] li", has_text=bob.name).count() == 1
    assert page.locator("[data-agent-online]").first.inner_text() in {"online", "offline", "not contacted yet"}

    # Drop the socket mid-stream; the page reconnects with ?after=<last seq> and misses nothing.
    before = timeline_seqs(page)
    page.locator("[data-task-timeline]").dispatch_event("hermes:drop")
    page.locator('[data-live-label]:text("Live")').wait_for()
    page.locator("[data-events] li").nth(len(before)).wait_for(timeout=20_000)
    after = timeline_seqs(page)
    assert after == list(range(1, len(after) + 1)) and after[: len(before)] == before
    screenshot(page, "task-detail-live")

    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel task").click()
    wait_state(page, "canceled")
    # The page was rendered while the task ran: its About card is fetched again for the end time, and the
    # indicator stops saying "Live" (both only changed on a reload).
    page.locator("[data-task-about] dt", has_text="Finished").wait_for()
    page.locator('[data-live-label]:text("Finished")').wait_for()
    alice_page.locator('h1 [data-task-state][data-state="canceled"]').wait_for(timeout=20_000)
    seqs = timeline_seqs(alice_page)
    assert seqs == list(range(1, len(seqs) + 1))
    other.close()


def test_a_quota_429_shows_its_guidance(
    page: Any, screenshot: Any, org: Any, dave: Any, demo_agents: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.orgs import quotas

    # The server counts under the real prefix (tests get a private one by default): fill today's task quota there.
    monkeypatch.setattr(quotas, "KEY_PREFIX", "hermes:quota")
    key = quotas._tasks_key(org, time.time())
    client = quotas._gate.client()
    client.set(key, org.limits.tasks_per_day, ex=3600)
    try:
        sign_in(page, dave.email)
        page.goto("/tasks/new/")
        page.get_by_label("Agent").select_option(label="Hermes Echo (demo-echo)")
        page.get_by_label("Message").fill("one too many")
        page.get_by_role("button", name="Send").click()
        alert = page.locator("[data-quota-error]")
        alert.wait_for()
        text = alert.inner_text()
        assert "tasks per day" in text and "Upgrade the plan" in text and "resets" in text
        screenshot(page, "quota-429")
    finally:
        client.delete(key)


def test_a_task_on_another_orgs_agent_streams_in_the_requesters_own_task_view(
    page: Any, screenshot: Any, hermes_server: Any, org: Any, other_org: Any, bob: Any, charlie: Any,
    settings: Any,
) -> None:  # fmt: skip
    """Federation on one instance: acme asks globex's demo echo agent from the console and watches the result
    arrive live on its own task page (the request, the run on globex and every result travel as messages)."""
    from apps.agents.actions import assign_demo_agents
    from apps.federation import actions as federation
    from apps.federation.models import Effect

    settings.HERMES_PUBLIC_URL = hermes_server.base_url
    assign_demo_agents(org=other_org, by=charlie)
    federation.set_policy(org=org, remote="globex", effect=Effect.ALLOW)
    federation.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)

    sign_in(page, bob.email)
    page.goto("/federation/remote-tasks/")
    page.get_by_role("textbox", name="Remote agent").fill("demo-echo.globex")
    page.get_by_label("Message").fill("hello across orgs")
    page.get_by_role("button", name="Request the task").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
    assert "demo-echo.globex" in page.locator("main").inner_text()
    wait_state(page, "completed")
    kinds = page.locator("[data-events] li").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert "artifact" in kinds and timeline_seqs(page) == list(range(1, len(kinds) + 1))
    assert "hello across orgs" in page.locator("[data-events]").inner_text()
    assert_accessible(page)
    screenshot(page, "federated-task-completed")


def test_the_reply_box_appears_live_when_the_agent_asks(
    page: Any, screenshot: Any, hermes_server: Any, org: Any, bob: Any, demo_agents: dict[str, Any]
) -> None:
    sign_in(page, bob.email)
    page.goto("/tasks/new/")
    page.get_by_label("Agent").select_option(label="Hermes Greeter (demo-greeter)")
    page.get_by_label("Message").fill("hi")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
    wait_state(page, "input-required")
    reply = page.locator("[data-reply-card]")
    reply.wait_for()  # shown by the live state, no reload
    assert "What is your name?" in page.locator("[data-events]").inner_text()
    assert "What is your name?" in reply.locator("[data-reply-question]").inner_text()  # the question, by the box
    page.reload()  # after a reload it comes back from the timeline the socket replays
    wait_state(page, "input-required")
    page.locator("[data-reply-question]").get_by_text("What is your name?").wait_for()
    assert_accessible(page)
    screenshot(page, "task-input-required")
    reply.get_by_label("Reply").fill("Ada")
    reply.get_by_role("button", name="Send reply").click()
    wait_state(page, "completed")
    assert "Nice to meet you, Ada." in page.locator("[data-events]").inner_text()
    assert page.locator("[data-reply-card]").is_hidden()
