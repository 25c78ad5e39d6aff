"""Task console pages: send (agent picker, message, quota guidance), the live list, the detail page with its
timeline socket, cancel and reply — under the role matrix, and isolated from charlie's org."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils.timesince import timeuntil

from apps.agents import actions as agent_actions
from apps.orgs import quotas
from apps.tasks import actions
from apps.tasks.models import Task
from tests.console.conftest import HX, main_html
from tests.factories import access_for

pytestmark = pytest.mark.django_db

TEXT = {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}


@pytest.fixture
def echo(org: Any) -> Any:
    return agent_actions.register_agent_manually(org=org, name="Echo", url="https://agent.example.com/rpc")


def send(org: Any, user: Any, agent: Any) -> Task:
    return actions.create_task(org=org, agent=agent, message=TEXT, access=access_for(user, org))


@pytest.mark.parametrize("who", ["alice", "bob", "dave", "mia"])
def test_every_member_lists_and_sends(as_user: Any, request: Any, org: Any, echo: Any, who: str) -> None:
    user = request.getfixturevalue(who)
    client = as_user(user)
    task = send(org, user, echo)
    html = main_html(client.get("/tasks/"))
    assert f'data-task-row="{task.pk}"' in html and 'data-ws-path="/ws/org/"' in html
    assert client.get("/tasks/new/").status_code == 200
    response = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "summarize this", "structured": ""})
    newest = Task.objects.for_org(org).order_by("-created_at").first()
    assert response.status_code == 302 and response["Location"] == f"/tasks/{newest.pk}/"
    assert newest.input["parts"] == [{"kind": "text", "text": "summarize this"}] and newest.created_by == user


def test_send_with_structured_data_and_precise_errors(as_user: Any, dave: Any, org: Any, echo: Any) -> None:
    client = as_user(dave)
    ok = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "", "structured": '{"expression": "2+3"}'})
    assert ok.status_code == 302
    assert Task.objects.for_org(org).get().input["parts"] == [{"kind": "data", "data": {"expression": "2+3"}}]
    empty = client.post("/tasks/new/", {"agent": str(echo.pk), "text": " ", "structured": ""})
    assert empty.status_code == 422 and "Write a message" in empty.content.decode()
    # A message over the limit is said once, not also refused as missing.
    long = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "x" * 100_001, "structured": ""})
    assert long.status_code == 422 and "at most 100000 characters" in long.content.decode()
    assert "Write a message" not in long.content.decode()
    bad = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "x", "structured": "[1, 2"})
    assert bad.status_code == 422 and "Not valid JSON" in bad.content.decode()
    not_object = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "x", "structured": "[1, 2]"})
    assert not_object.status_code == 422 and "JSON object" in not_object.content.decode()
    deep = client.post(
        "/tasks/new/", {"agent": str(echo.pk), "text": "x", "structured": "{" + '"a": {' * 24 + "}" * 25}
    )
    assert deep.status_code == 422 and "This nests 25 levels deep; agents accept at most 24." in deep.content.decode()
    # An agent offered when the page loaded and no longer usable (another org's, made private): said in words,
    # not Django's "Select a valid choice. <uuid> is not one of the available choices."
    gone = client.post("/tasks/new/", {"agent": "126c8bc2-d05a-4c77-bfdc-555ede70a1ad", "text": "x", "structured": ""})
    assert gone.status_code == 422 and "no longer available to your organization" in gone.content.decode()
    assert Task.objects.for_org(org).count() == 1


def test_an_oversized_input_is_blamed_on_the_part_that_makes_it(
    as_user: Any, dave: Any, org: Any, echo: Any, settings: Any
) -> None:
    # The 422 always put the error under "Message", also for a one-byte message beside huge structured data.
    settings.HERMES_MAX_TASK_INPUT_BYTES = 1000
    client = as_user(dave)

    def errors(text: str, structured: str) -> dict[str, list[str]]:
        response = client.post("/tasks/new/", {"agent": str(echo.pk), "text": text, "structured": structured})
        assert response.status_code == 422
        return dict(response.context["form"].errors)

    big_data = '{"a": "' + "東" * 400 + '"}'  # 1208 bytes as stored (compact, 3 a character)
    only_data = errors("", big_data)
    assert list(only_data) == ["structured"] and only_data["structured"][0].startswith("The task input is ")
    both = errors("x", big_data)
    assert list(both) == ["structured"]
    (said,) = both["structured"]
    assert said.startswith("The message and the structured data are ") and "1208 of them in the structured data" in said
    assert said.endswith("the limit is 1000 bytes.")
    only_text = errors("y" * 1200, "")
    assert list(only_text) == ["text"] and only_text["text"][0].startswith("The task input is ")
    text_larger = errors("y" * 1200, '{"a": 1}')
    assert list(text_larger) == ["text"] and "of them in the message" in text_larger["text"][0]
    assert not Task.objects.for_org(org).exists()


def test_agent_picker_offers_own_and_public_agents_only(
    as_user: Any, charlie: Any, org: Any, other_org: Any, echo: Any
) -> None:
    public = agent_actions.register_agent_manually(
        org=org, name="Public Echo", url="https://agent.example.com/rpc", visibility="public"
    )
    client = as_user(charlie)
    page = main_html(client.get("/tasks/new/"))
    # Options carry the slug: two agents may share a name, never a slug.
    assert f">Public Echo ({public.slug})<" in page and f">Echo ({echo.slug})<" not in page
    refused = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "x"})
    assert refused.status_code == 422 and "no longer available to your organization" in refused.content.decode()
    assert client.post("/tasks/new/", {"agent": str(public.pk), "text": "x"}).status_code == 302
    assert Task.objects.for_org(other_org).get().agent == public


def test_quota_429_shows_which_limit_and_how_to_raise_it(as_user: Any, dave: Any, org: Any, echo: Any) -> None:
    now = time.time()
    quotas._gate.client().set(quotas._tasks_key(org, now), org.limits.tasks_per_day)
    response = as_user(dave).post("/tasks/new/", {"agent": str(echo.pk), "text": "one more"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    html = main_html(response)
    assert "data-quota-error" in html and "tasks per day" in html and "Upgrade the plan" in html
    assert not Task.objects.for_org(org).exists()


def test_the_quota_notice_says_when_it_resets_as_a_time_and_a_wait(
    as_user: Any, dave: Any, org: Any, echo: Any
) -> None:
    now = time.time()
    quotas._gate.client().set(quotas._tasks_key(org, now), org.limits.tasks_per_day)
    response = as_user(dave).post("/tasks/new/", {"agent": str(echo.pk), "text": "one more"})
    assert response.status_code == 429
    notice = main_html(response).split("data-quota-error", 1)[1].split("</div>", 1)[0]
    assert f"limit of {org.limits.tasks_per_day:,} tasks per day (UTC) is used up" in notice
    # The day (UTC) resets at midnight: a <time> like every other timestamp, and the wait in words.
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    shown = f'<time datetime="{midnight.isoformat()}" data-precision="minutes">{midnight:%Y-%m-%d} 00:00 UTC</time>'
    assert f"It resets at {shown} (in " in notice
    assert f"(in {timeuntil(midnight)})" in notice  # the wait in words: "18\xa0hours, 7\xa0minutes"
    assert f"in {response['Retry-After']} s" not in notice  # the raw count of seconds it showed


def test_filters_answer_with_the_table_fragment(as_user: Any, alice: Any, org: Any, echo: Any) -> None:
    task = send(org, alice, echo)
    client = as_user(alice)
    fragment = client.get("/tasks/", {"status": "submitted"}, **HX).content.decode()
    assert "<html" not in fragment and f'data-task-row="{task.pk}"' in fragment
    none = client.get("/tasks/", {"status": "completed"}, **HX).content.decode()
    assert "No tasks match these filters" in none
    bogus = main_html(client.get("/tasks/", {"status": "bogus"}))  # it listed every task under the bad filter
    assert f'data-task-row="{task.pk}"' not in bogus and "Select a valid choice" in bogus
    long = main_html(client.get("/tasks/", {"agent": "x" * 5000}))  # quoted in full, all 5000 characters
    assert f"{'x' * 39}…" in long and "x" * 41 not in long


def test_detail_page_wires_the_timeline_socket(as_user: Any, mia: Any, org: Any, echo: Any) -> None:
    task = send(org, mia, echo)
    html = main_html(as_user(mia).get(f"/tasks/{task.pk}/"))
    assert f'data-ws-path="/ws/tasks/{task.pk}/"' in html and "<template data-event-template>" in html
    assert "data-cancel-task" in html and "data-watchers" in html and "Echo" in html


def test_why_a_task_is_held_up_or_ended_shows_in_the_list_and_on_its_page(
    as_user: Any, mia: Any, org: Any, echo: Any
) -> None:
    # A federated request in the dead-letter queue keeps its task submitted with the reason in last_error: the
    # API showed it, the console did not.
    task = send(org, mia, echo)
    actions.note_waiting_error(org.pk, task.pk, "the task request could not be delivered: HTTP 403: policy_denied")
    client = as_user(mia)
    listing = main_html(client.get("/tasks/"))
    assert "HTTP 403: policy_denied" in listing
    page = main_html(client.get(f"/tasks/{task.pk}/"))
    assert "Held up by" in page and "HTTP 403: policy_denied" in page
    actions.finish(task, "failed", error="Division by zero")
    assert "Reason</dt>" in main_html(client.get(f"/tasks/{task.pk}/"))


def test_the_about_card_comes_alone_for_htmx_and_shows_when_the_task_finished(
    as_user: Any, mia: Any, org: Any, echo: Any
) -> None:
    """live.js fetches the About card again when the task ends: "Finished" used to appear only after a reload."""
    task = send(org, mia, echo)
    client = as_user(mia)
    page = main_html(client.get(f"/tasks/{task.pk}/"))
    assert 'data-task-about data-state="submitted"' in page and ">Finished<" not in page
    assert f'hx-get="/tasks/{task.pk}/" hx-trigger="hermes:refresh" hx-swap="outerHTML"' in page
    actions.record(task, [actions.Observation(kind="state", data={}, state="completed")])
    task.refresh_from_db()
    about = client.get(f"/tasks/{task.pk}/", **HX)
    html = about.content.decode()
    assert about.status_code == 200 and html.lstrip().startswith('<section class="card" id="task-about"')
    assert 'data-state="completed"' in html and "data-event-template" not in html
    finished = task.finished_at.astimezone(UTC)
    # Labelled UTC with a machine-readable value, which hermes.js shows in the viewer's own time zone.
    assert f'<dt>Finished</dt><dd><time datetime="{finished.isoformat()}">' in html
    assert f"{finished:%Y-%m-%d %H:%M:%S} UTC</time>" in html


def test_the_list_shows_times_in_utc_labelled_and_refreshes_with_the_current_filters(
    as_user: Any, alice: Any, org: Any, echo: Any
) -> None:
    task = send(org, alice, echo)
    created = task.created_at.astimezone(UTC)
    html = main_html(as_user(alice).get("/tasks/"))
    assert f'<time datetime="{created.isoformat()}">{created:%Y-%m-%d %H:%M:%S} UTC</time>' in html
    # live.js builds a refresh from the filter form as it reads then (tests/e2e/test_live_tasks.py): the root's
    # fixed hx-get kept the page's first query, so a refresh after filtering listed every task under "Failed".
    assert 'id="task-filters"' in html and 'data-list-url="/tasks/" data-filters="#task-filters"' in html
    assert 'hx-trigger="hermes:refresh"' not in html


def test_cancel_and_reply(as_user: Any, bob: Any, org: Any, echo: Any) -> None:
    task = send(org, bob, echo)
    client = as_user(bob)
    reply = client.post(f"/tasks/{task.pk}/reply/", {"text": "more"}, follow=True)
    assert "Cannot reply" in main_html(reply)
    actions.record(task, [actions.Observation(kind="state", data={}, state="input-required")])
    empty = client.post(f"/tasks/{task.pk}/reply/", {"text": "  "})
    assert empty.status_code == 422  # the page again, the error at the reply box (not a banner at the top)
    assert 'id="id_text_error"' in empty.content.decode() and "Write a reply first." in empty.content.decode()
    # That page's address takes only posts: opened again (reload, bookmark) it leads to the task, not a blank 405.
    reopened = client.get(f"/tasks/{task.pk}/reply/")
    assert reopened.status_code == 302 and reopened["Location"] == f"/tasks/{task.pk}/"
    assert client.get("/org/keys/12345/rotate/")["Location"] == "/org/keys/"
    canceled = client.post(f"/tasks/{task.pk}/cancel/", **HX)
    assert canceled.status_code == 204 and canceled["HX-Redirect"] == f"/tasks/{task.pk}/"
    task.refresh_from_db()
    assert task.state == "canceled"
    again = client.post(f"/tasks/{task.pk}/cancel/", follow=True)
    assert "Cannot cancel" in main_html(again)
    assert "data-cancel-task" not in main_html(client.get(f"/tasks/{task.pk}/"))


def test_charlie_cannot_see_acme_tasks(as_user: Any, alice: Any, charlie: Any, org: Any, echo: Any) -> None:
    task = send(org, alice, echo)
    client = as_user(charlie)
    assert client.get(f"/tasks/{task.pk}/").status_code == 404
    assert str(task.pk) not in client.get("/tasks/").content.decode()
    assert client.get("/tasks/", {"agent": str(echo.pk)}).status_code == 200  # an unknown agent filter: nothing


def test_the_list_pages_back_through_older_tasks(
    as_user: Any, alice: Any, org: Any, echo: Any, monkeypatch: Any
) -> None:

    monkeypatch.setattr("apps.tasks.views.LIST_LIMIT", 2)
    sent = [send(org, alice, echo) for _ in range(5)]  # newest last
    client = as_user(alice)

    def page(url: str) -> tuple[list[str], str | None]:
        html = main_html(client.get(url))
        rows = re.findall(r'data-task-row="([0-9a-f-]+)"', html)
        older = re.search(r'href="([^"]+)" data-older-tasks', html)
        return rows, older.group(1).replace("&amp;", "&") if older else None

    seen, url = [], "/tasks/?status=submitted"
    while url:
        rows, url = page(url)
        seen += rows
        if url:
            assert "status=submitted" in url  # the filters stay on every page
    assert seen == [str(task.pk) for task in reversed(sent)]  # every task once, newest first
    assert "Newest tasks" in main_html(client.get(f"/tasks/?before={sent[2].pk}"))
    assert "data-anchor-lost" not in main_html(client.get(f"/tasks/?before={sent[2].pk}"))
    # A bad or deleted anchor: page one, and the page says that is what it shows.
    assert page("/tasks/?before=not-a-task")[0] == [str(sent[4].pk), str(sent[3].pk)]
    assert "data-anchor-lost" in main_html(client.get("/tasks/?before=not-a-task"))
    gone = sent[2].pk
    Task.objects.unscoped("test").filter(pk=gone).delete()
    assert page(f"/tasks/?before={gone}")[0] == [str(sent[4].pk), str(sent[3].pk)]
    assert "no longer exists" in main_html(client.get(f"/tasks/?before={gone}"))


def test_a_link_to_another_of_your_orgs_switches_to_it(
    as_user: Any, alice: Any, bob: Any, org: Any, other_org: Any, echo: Any
) -> None:
    from apps.orgs.models import Membership

    globex_agent = agent_actions.register_agent_manually(org=other_org, name="G", url="https://g.example.com/rpc")
    task = actions.create_task(org=other_org, agent=globex_agent, message=TEXT)
    Membership.objects.create(organization=other_org, user=alice, role="member")
    client = as_user(alice)  # acting for acme
    for path in (f"/tasks/{task.pk}/", f"/agents/{globex_agent.pk}/"):
        followed = client.get(path, follow=True)  # was a 404: the page belongs to globex, alice's other org
        assert followed.redirect_chain == [(path, 302)] and followed.status_code == 200
        assert f"Switched to {other_org.name}, which this page belongs to." in followed.content.decode()
        client.post("/orgs/switch/", {"org": "acme"})  # back to acme for the next link
    assert as_user(bob).get(f"/tasks/{task.pk}/").status_code == 404  # not bob's org: nothing said about it
    assert client.post(f"/tasks/{task.pk}/cancel/").status_code == 404  # actions never switch
