from __future__ import annotations

import json
import uuid
from base64 import b64decode, b64encode
from typing import Any
from urllib import parse

import pytest
from rest_framework.test import APIClient

from apps.core.models import AuditEvent
from apps.tasks import actions
from apps.tasks.actions import Observation
from apps.tasks.models import Task
from tests.factories import issue_api_key, key_client
from tests.tasks.conftest import TEXT, make_agent, nested, reload_task

pytestmark = pytest.mark.django_db


def post(client: Any, url: str, body: Any, **extra: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


def test_submit_returns_202_and_enqueues_on_commit(
    client_for: Any, alice: Any, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for(alice)
    body = {"agent": str(agent.pk), "input": {"parts": [{"text": "hi"}, {"data": {"n": 1}}]}, "metadata": {"a": 1}}
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, "/api/v1/tasks", body)
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["status"] == "submitted" and data["agent"] == {"id": str(agent.pk), "name": "Echo"}
    task = Task.objects.for_org(agent.organization).get(pk=data["id"])
    assert task.input == {"role": "user", "parts": [{"kind": "text", "text": "hi"}, {"kind": "data", "data": {"n": 1}}]}
    assert task.metadata == {"a": 1} and task.created_by == alice
    assert len(callbacks) == 2  # broadcast/signal of the first events, then the Celery dispatch


def test_submit_with_an_api_key_is_three_queries(
    alice: Any, org: Any, agent: Any, django_assert_num_queries: Any
) -> None:
    # The key (with its creator's role), the agent, then the task, its first two events and its audit row in one
    # statement (apps.core.db.insert_together): no BEGIN/COMMIT, no query per row.
    _key, plaintext = issue_api_key(alice, org, scopes=["tasks:write"])
    client = key_client(plaintext)
    assert post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT}).status_code == 202  # last_used_at
    with django_assert_num_queries(3):
        response = post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT})
    assert response.status_code == 202
    task = Task.objects.for_org(org).get(pk=response.json()["id"])
    assert [e.kind for e in task.events.order_by("seq")] == ["state", "message"] and task.last_seq == 2
    assert AuditEvent.objects.filter(action="task.created", target_id=str(task.pk), api_key_id=_key.pk).exists()


def test_public_agent_of_another_org_is_usable(client_for: Any, alice: Any, public_agent: Any) -> None:
    response = post(client_for(alice), "/api/v1/tasks", {"agent": str(public_agent.pk), "input": TEXT})
    assert response.status_code == 202


@pytest.mark.parametrize("agent_id", ["private", "missing"])
def test_unknown_or_foreign_agent_is_404(
    client_for: Any, alice: Any, private_foreign_agent: Any, agent_id: str
) -> None:
    value = {"private": str(private_foreign_agent.pk), "missing": str(uuid.uuid4())}[agent_id]
    response = post(client_for(alice), "/api/v1/tasks", {"agent": value, "input": TEXT})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    assert Task.objects.unscoped("test").count() == 0


def test_an_agent_named_by_anything_but_its_id_is_a_404_that_says_so(client_for: Any, alice: Any) -> None:
    response = post(client_for(alice), "/api/v1/tasks", {"agent": "demo-echo", "input": TEXT})
    assert response.status_code == 404
    assert response.json()["error"]["details"] == {
        "agent": ["'demo-echo' is not an agent id (a UUID); GET /api/v1/agents lists your agents."]
    }
    assert Task.objects.unscoped("test").count() == 0


def test_oversized_input_is_413(client_for: Any, alice: Any, agent: Any, settings: Any) -> None:
    settings.HERMES_MAX_TASK_INPUT_BYTES = 1000
    body = {"agent": str(agent.pk), "input": {"parts": [{"text": "x" * 1500}]}}
    response = post(client_for(alice), "/api/v1/tasks", body)
    assert response.status_code == 413
    assert response.json()["error"]["details"]["limit"] == 1000
    huge = {"agent": str(agent.pk), "input": {"parts": [{"text": "x" * 40000}]}}
    refused = post(client_for(alice), "/api/v1/tasks", huge)  # refused before parsing, as the body it is
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    assert Task.objects.unscoped("test").count() == 0


def escaped(body: dict[str, Any]) -> str:
    """The body as JSON with every character of every string written as a \\uXXXX escape (valid JSON)."""

    def spell(value: Any) -> str:
        if isinstance(value, str):
            return '"' + "".join(f"\\u{ord(c):04x}" for c in value) + '"'
        if isinstance(value, dict):
            return "{" + ",".join(f"{spell(k)}:{spell(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ",".join(spell(v) for v in value) + "]"
        return json.dumps(value)

    return spell(body)


def waiting_task(agent: Any, org: Any = None) -> Task:
    """A task of `org` (by default the agent's own) waiting for input on `agent`."""
    task = actions.create_task(org=org or agent.organization, agent=agent, message={"role": "user", **TEXT})
    return actions.record(task, [Observation(kind="state", data={}, state="input-required")])


def test_the_input_limit_is_the_inputs_size_however_the_body_spells_it(
    client_for: Any, alice: Any, agent: Any, settings: Any
) -> None:
    # 120 KB of "é" as UTF-8 (the default limit is 256 KiB) is 360 KB of JSON written with \u00e9 escapes: the
    # early check on the body used to refuse it as "The task input is 360… bytes", while a follow-up took it.
    settings.HERMES_MAX_TASK_INPUT_BYTES = 256 * 1024  # the default
    client = client_for(alice)
    text = "é" * 60_000
    body = {"agent": str(agent.pk), "input": {"parts": [{"text": text}]}}
    raw = client.post("/api/v1/tasks", json.dumps(body, ensure_ascii=False), content_type="application/json")
    assert raw.status_code == 202, raw.content
    escapes = json.dumps(body)  # ensure_ascii: "\u00e9"
    assert len(escapes) > 350_000
    spelled = client.post("/api/v1/tasks", escapes, content_type="application/json")
    assert spelled.status_code == 202, spelled.content
    assert spelled.json()["input"] == raw.json()["input"]
    follow_up = client.post(
        f"/api/v1/tasks/{waiting_task(agent).pk}/messages",
        json.dumps({"input": body["input"]}),
        content_type="application/json",
    )
    assert follow_up.status_code == 202, follow_up.content
    # Over the limit, both endpoints say so with the input's own size, not the body's.
    too_much = {"parts": [{"text": "é" * 140_000}]}
    size = actions.input_size({"role": "user", "parts": [{"kind": "text", "text": "é" * 140_000}]}, {})
    for url, payload in (
        ("/api/v1/tasks", {"agent": str(agent.pk), "input": too_much}),
        (f"/api/v1/tasks/{waiting_task(agent).pk}/messages", {"input": too_much}),
    ):
        refused = client.post(url, json.dumps(payload), content_type="application/json")
        assert refused.status_code == 413, url
        assert refused.json()["error"] == {
            "code": "input_too_large",
            "message": f"The task input is {size} bytes; the limit is {256 * 1024} bytes.",
            "details": {"size": size, "limit": 256 * 1024},
        }


@pytest.mark.parametrize("endpoint", ["create", "follow-up"])
def test_only_a_body_no_input_within_the_limit_could_need_is_refused_unread(
    client_for: Any, alice: Any, agent: Any, settings: Any, endpoint: str
) -> None:
    settings.HERMES_MAX_TASK_INPUT_BYTES = 4000
    client = client_for(alice)
    url = "/api/v1/tasks" if endpoint == "create" else f"/api/v1/tasks/{waiting_task(agent).pk}/messages"

    def body(text: str) -> dict[str, Any]:
        payload = {"input": {"parts": [{"text": text}]}}
        return {"agent": str(agent.pk), **payload} if endpoint == "create" else payload

    # An input exactly at the limit with every character escaped (six bytes each) is taken.
    filler = 4000 - actions.input_size({"role": "user", "parts": [{"kind": "text", "text": ""}]}, {})
    assert actions.input_size({"role": "user", "parts": [{"kind": "text", "text": "x" * filler}]}, {}) == 4000
    at_limit = escaped(body("x" * filler))
    assert len(at_limit) > 6 * 3900
    assert client.post(url, at_limit, content_type="application/json").status_code == 202
    # One byte more is the input's refusal.
    over = client.post(url, escaped(body("x" * (filler + 1))), content_type="application/json")
    assert over.status_code == 413 and over.json()["error"]["details"] == {"size": 4001, "limit": 4000}
    # A body past six times the limit plus 16 KiB cannot hold an acceptable input: refused as a body.
    most = 6 * 4000 + 16 * 1024
    refused = client.post(url, json.dumps(body("x" * most)), content_type="application/json")
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "request_too_large" and error["details"]["limit"] == most
    assert error["message"].startswith(f"The request body is {error['details']['size']} bytes; a task input")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": TEXT}, "agent"),
        ({"agent": "x"}, "input"),
        ({"agent": "x", "input": {"parts": []}}, "input"),
        ({"agent": "x", "input": {"parts": [{"text": "a", "data": {}}]}}, "input"),
        ({"agent": "x", "input": {"parts": [{"kind": "data", "text": "a"}]}}, "input"),
        ({"agent": "x", "input": {"parts": [{"data": [1]}]}}, "input"),
        ({"agent": "x", "input": TEXT, "metadata": "no"}, "metadata"),
        ({"agent": "x", "input": TEXT, "deadline_seconds": 0}, "deadline_seconds"),
    ],
)
def test_malformed_input_is_400_per_field(client_for: Any, alice: Any, body: Any, field: str) -> None:
    response = post(client_for(alice), "/api/v1/tasks", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["details"]


def test_a_message_holds_one_to_64_parts_as_the_schema_says(client_for: Any, alice: Any, agent: Any) -> None:
    client = client_for(alice)
    too_many = {"agent": str(agent.pk), "input": {"parts": [{"text": "x"}] * 65}}
    response = post(client, "/api/v1/tasks", too_many)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "input": {"parts": {"non_field_errors": ["A message holds at most 64 parts."]}}
    }
    none = post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": {"parts": []}})
    assert none.json()["error"]["details"] == {
        "input": {"parts": {"non_field_errors": ["A message needs at least one part."]}}
    }
    assert Task.objects.unscoped("test").count() == 0
    assert post(client, "/api/v1/tasks", {**too_many, "input": {"parts": [{"text": "x"}] * 64}}).status_code == 202
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    follow_up = post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": too_many["input"]})
    assert follow_up.status_code == 400 and "at most 64 parts" in json.dumps(follow_up.json())
    # The schema says it: it used to declare a list of any length, checked by hand after reading every part.
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    parts = schema["components"]["schemas"]["TaskMessage"]["properties"]["parts"]
    assert (parts["minItems"], parts["maxItems"]) == (1, 64)


def test_an_agent_id_with_spaces_is_refused_as_the_task_filter_refuses_it(
    client_for: Any, alice: Any, agent: Any
) -> None:
    # POST /tasks trimmed " <id>" and took it, while GET /tasks?agent= refused the same value as no id.
    client = client_for(alice)
    for value in (f" {agent.pk}", f"{agent.pk}\n"):
        reason = f"'{value}' is not an agent id (a UUID); GET /api/v1/agents lists your agents."
        listed = client.get("/api/v1/tasks", {"agent": value})
        assert listed.status_code == 400 and listed.json()["error"]["details"] == {"agent": [reason]}
        sent = post(client, "/api/v1/tasks", {"agent": value, "input": TEXT})
        assert sent.status_code == 404 and sent.json()["error"]["details"] == {"agent": [reason]}
    assert Task.objects.unscoped("test").count() == 0


def test_data_nested_deeper_than_a2a_carries_is_400_and_writes_nothing(client_for: Any, alice: Any, agent: Any) -> None:
    client = client_for(alice)
    body = {"agent": str(agent.pk), "input": {"parts": [{"text": "hi"}, {"data": nested(25)}]}}
    response = post(client, "/api/v1/tasks", body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"] == {"input": ["part 2's data nests 25 levels deep; agents accept at most 24."]}
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    follow_up = post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": {"parts": [{"data": nested(40)}]}})
    assert follow_up.status_code == 400 and "40 levels deep" in follow_up.json()["error"]["message"]
    assert Task.objects.unscoped("test").count() == 1 and reload_task(task).state == "input-required"


def test_text_that_is_not_a_string_is_400_not_coerced(client_for: Any, alice: Any, agent: Any) -> None:
    # DRF's CharField turned 5 into "5": the agent was sent text the caller never wrote.
    client = client_for(alice)
    not_a_string = {"input": {"parts": {"0": {"text": ["Not a valid string."]}}}}
    for value in (5, 1.5, True, ["a"], {"a": 1}):
        response = post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": {"parts": [{"text": value}]}})
        assert response.status_code == 400, value
        assert response.json()["error"]["details"] == not_a_string, value
    assert Task.objects.unscoped("test").count() == 0
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    follow_up = post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": {"parts": [{"text": 5}]}})
    assert follow_up.status_code == 400 and follow_up.json()["error"]["details"] == not_a_string
    assert reload_task(task).state == "input-required"


def test_task_metadata_nested_deeper_than_a2a_carries_is_400_naming_it(client_for: Any, alice: Any, agent: Any) -> None:
    client = client_for(alice)
    response = post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT, "metadata": nested(30)})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"] == {"metadata": ["the task's metadata nests 30 levels deep; agents accept at most 24."]}
    assert Task.objects.unscoped("test").count() == 0
    deepest = {"agent": str(agent.pk), "input": TEXT, "metadata": nested(24)}
    assert post(client, "/api/v1/tasks", deepest).status_code == 202


def test_an_unknown_field_is_named_not_dropped(client_for: Any, alice: Any, agent: Any) -> None:
    # A typo'd field used to be ignored: the task was sent with the default deadline and a 202.
    body = {"agent": str(agent.pk), "input": {"role": "user", "parts": [{"text": "hi"}]}, "deadline_second": 60}
    response = post(client_for(alice), "/api/v1/tasks", body)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "deadline_second": ["Unknown field: this endpoint takes agent, deadline_seconds, input, metadata."]
    }
    del body["deadline_second"]  # nested A2A fields (the message's role) are not refused
    assert post(client_for(alice), "/api/v1/tasks", body).status_code == 202


def test_malformed_json_is_400(client_for: Any, alice: Any) -> None:
    response = client_for(alice).post("/api/v1/tasks", "{nope", content_type="application/json")
    assert response.status_code == 400


def test_retrieve_and_other_org_is_404(client_for: Any, alice: Any, charlie: Any, agent: Any) -> None:
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    assert client_for(alice).get(f"/api/v1/tasks/{task.pk}").json()["id"] == str(task.pk)
    for url in (f"/api/v1/tasks/{task.pk}", f"/api/v1/tasks/{task.pk}/events", f"/api/v1/tasks/{task.pk}/stream"):
        response = client_for(charlie).get(url)
        assert response.status_code == 404, url
    for url in (f"/api/v1/tasks/{task.pk}/cancel", f"/api/v1/tasks/{task.pk}/messages"):
        assert post(client_for(charlie), url, {"input": TEXT}).status_code == 404, url
    assert client_for(alice).get("/api/v1/tasks/not-a-uuid").status_code == 404


def test_list_filters_and_pins_queries(
    client_for: Any, alice: Any, charlie: Any, org: Any, other_org: Any, django_assert_num_queries: Any
) -> None:
    echo, calc = make_agent(org, "echo"), make_agent(org, "calc")
    theirs = make_agent(other_org, "theirs")
    for i in range(6):
        actions.create_task(org=org, agent=echo if i % 2 else calc, message={"role": "user", **TEXT})
    actions.create_task(org=other_org, agent=theirs, message={"role": "user", **TEXT})
    done = actions.create_task(org=org, agent=echo, message={"role": "user", **TEXT})
    actions.record(done, [Observation(kind="state", data={}, state="completed")])
    client = client_for(alice)
    client.get("/api/v1/tasks")  # warm the session
    # session + user + memberships, then one query for the page (agent joined in).
    with django_assert_num_queries(4):
        response = client.get("/api/v1/tasks?page_size=3")
    page = response.json()
    assert len(page["results"]) == 3 and page["next"]
    assert len(client.get(page["next"]).json()["results"]) == 3
    assert len(client.get("/api/v1/tasks?page_size=3&cursor=").json()["results"]) == 3  # empty: the first page
    bad_cursor = client.get("/api/v1/tasks?cursor=not-a-cursor")
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["details"] == {"cursor": ["Invalid cursor."]}
    # Another list's cursor was read as a position in this one (a shifted page); it is refused like any other.
    foreign = page["next"].split("cursor=")[1].split("&")[0]
    assert client.get(f"/api/v1/agents?cursor={foreign}").status_code == 400
    # An edited position (a date that is none, another point of the list) is refused as the cursor, not read.
    tokens = dict(parse.parse_qsl(b64decode(parse.unquote(foreign)).decode()))
    for position in ("garbage", "2026-13-45", "2020-01-01 00:00:00+00:00"):
        forged = b64encode(parse.urlencode({**tokens, "p": position}).encode()).decode()
        refused = client.get("/api/v1/tasks", {"cursor": forged})
        assert refused.status_code == 400 and refused.json()["error"]["details"] == {"cursor": ["Invalid cursor."]}
    for size in ("0", "-1", "ten"):
        bad_size = client.get(f"/api/v1/tasks?page_size={size}").json()["error"]
        assert bad_size["details"] == {"page_size": ["A whole number from 1 to 200."]}
    assert len(client.get("/api/v1/tasks?page_size=100000").json()["results"]) == 7  # clamped to 200
    assert len(client.get("/api/v1/tasks").json()["results"]) == 7
    assert len(client.get(f"/api/v1/tasks?agent={echo.pk}").json()["results"]) == 4
    assert [t["id"] for t in client.get("/api/v1/tasks?status=completed").json()["results"]] == [str(done.pk)]
    # Repeated, it means any of them (only the last one counted).
    either = client.get("/api/v1/tasks?status=completed&status=submitted").json()["results"]
    assert str(done.pk) in {t["id"] for t in either} and len(either) == 7
    assert len(client.get(f"/api/v1/tasks?agent={echo.pk}&agent={calc.pk}").json()["results"]) == 7
    bad = client.get("/api/v1/tasks?status=done&agent=echo")
    assert bad.status_code == 400
    assert bad.json()["error"]["details"] == {
        "status": [
            "Unknown status done: one of submitted, working, input-required, auth-required, completed, failed, "
            "canceled, rejected."
        ],
        "agent": ["'echo' is not an agent id (a UUID); GET /api/v1/agents lists your agents."],
    }


def test_the_sse_stream_is_signed_in_by_the_cookie_or_a_header_never_by_api_key(
    client_for: Any, alice: Any, org: Any, task: Any
) -> None:
    # What docs/tasks.md tells a browser client: EventSource sends the cookie; `?api_key=` is the websockets' only.
    _, plaintext = issue_api_key(alice, org)
    url = f"/api/v1/tasks/{task.pk}/stream"
    session = client_for(alice).get(url, HTTP_ACCEPT="text/event-stream")
    assert session.status_code == 200 and session["Content-Type"] == "text/event-stream"
    header = key_client(plaintext).get(url, HTTP_ACCEPT="text/event-stream")
    assert header.status_code == 200 and header["Content-Type"] == "text/event-stream"
    query = APIClient().get(f"{url}?api_key={plaintext}", HTTP_ACCEPT="text/event-stream")
    assert query.status_code == 401 and query.json()["error"]["code"] == "not_authenticated"
    both = client_for(alice).get(f"{url}?api_key={plaintext}", HTTP_ACCEPT="text/event-stream")
    assert both.status_code == 400 and "api_key" in both.json()["error"]["details"]


def test_events_after(client_for: Any, alice: Any, agent: Any) -> None:
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    actions.record(task, [Observation(kind="progress", data={"n": i}) for i in range(3)])
    client = client_for(alice)
    body = client.get(f"/api/v1/tasks/{task.pk}/events?after=2").json()
    assert [e["seq"] for e in body["results"]] == [3, 4, 5] and body["last_seq"] == 5
    page = client.get(f"/api/v1/tasks/{task.pk}/events?limit=2").json()
    assert [e["seq"] for e in page["results"]] == [1, 2] and page["next_after"] == 2
    for query, name, bound in (("after=-1", "after", "of at least 0"), ("limit=0", "limit", "from 1 to 500")):
        error = client.get(f"/api/v1/tasks/{task.pk}/events?{query}").json()["error"]
        assert error["message"] == f"'{name}' must be a whole number {bound}."
    assert len(client.get(f"/api/v1/tasks/{task.pk}/events?limit=9999").json()["results"]) == 5  # clamped to 500
    stream = client.get(f"/api/v1/tasks/{task.pk}/stream", HTTP_LAST_EVENT_ID="x", HTTP_ACCEPT="text/event-stream")
    assert stream["Content-Type"] == "application/json"  # an error, even to an SSE client, is a JSON document
    assert stream.status_code == 400 and stream.json()["error"]["details"] == {
        "Last-Event-ID": ["A whole number of at least 0."]
    }


def test_head_of_a_stream_answers_at_once(client_for: Any, alice: Any, agent: Any) -> None:
    """A HEAD of an unfinished task's stream held the connection for HERMES_SSE_MAX_SECONDS while its body-less
    stream polled on: it now gets the headers of the GET and nothing runs behind them."""
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})  # no worker here
    client = client_for(alice)
    head = client.head(f"/api/v1/tasks/{task.pk}/stream", HTTP_ACCEPT="text/event-stream")
    assert head.status_code == 200 and head["Content-Type"] == "text/event-stream" and not head.streaming
    assert head.content == b""
    assert client.head(f"/api/v1/tasks/{uuid.uuid4()}/stream").status_code == 404  # checked like the GET


def test_cancel_and_follow_up(client_for: Any, alice: Any, agent: Any) -> None:
    client = client_for(alice)
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    response = post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": TEXT})
    assert response.status_code == 409 and response.json()["error"]["code"] == "task_not_waiting"
    actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    assert post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": {"parts": []}}).status_code == 400
    response = post(client, f"/api/v1/tasks/{task.pk}/messages", {"input": {"parts": [{"text": "42"}]}})
    assert response.status_code == 202 and response.json()["status"] == "working"
    Task.objects.for_org(agent.organization).filter(pk=task.pk).update(claimed_by="")
    response = post(client, f"/api/v1/tasks/{task.pk}/cancel", {})
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    response = post(client, f"/api/v1/tasks/{task.pk}/cancel", {})
    assert response.status_code == 409 and response.json()["error"]["code"] == "task_finished"


@pytest.mark.parametrize("gone", ["made_private", "deleted_by_its_owner", "own_deleted"])
def test_a_follow_up_to_an_agent_no_longer_usable_is_a_409_that_writes_nothing(
    client_for: Any,
    alice: Any,
    charlie: Any,
    org: Any,
    other_org: Any,
    gone: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """acme's task waits for input on globex's public agent (or on its own); globex makes it private or deletes
    it (or acme deletes its own): the follow-up was a 202 and the agent ran."""
    from apps.agents.models import Agent, Visibility
    from apps.core.models import AuditEvent

    owner, owner_client = (alice, org) if gone == "own_deleted" else (charlie, other_org)
    agent = make_agent(owner_client, "helper", visibility=Visibility.PUBLIC)
    task = waiting_task(agent, org)
    if gone == "made_private":
        answer = client_for(owner).patch(f"/api/v1/agents/{agent.pk}", {"visibility": "private"}, format="json")
        assert answer.status_code == 200, answer.content
    else:
        assert client_for(owner).delete(f"/api/v1/agents/{agent.pk}").status_code == 204  # retired: it has a task
        assert Agent.with_retired.for_org(owner_client).filter(pk=agent.pk).exists()
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client_for(alice), f"/api/v1/tasks/{task.pk}/messages", {"input": TEXT})
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    # Another org's agent is "no longer available" however it went (deleting makes it private first): what its
    # owner did stays the owner's. The org's own agent says it was deleted.
    reason = "retired" if gone == "own_deleted" else "unavailable"
    assert error["code"] == "agent_unavailable" and error["details"] == {"agent": str(agent.pk), "reason": reason}
    expected = {
        "retired": "The agent was deleted (retired): its tasks keep it for their history, but it takes no new task "
        "or message.",
        "unavailable": "The agent is no longer available to this organization: its owner made it private or deleted "
        "it.",
    }
    assert error["message"] == expected[reason]
    assert callbacks == []  # nothing dispatched, broadcast or relayed
    after = reload_task(task)
    assert (after.state, after.last_seq, after.pending_message) == ("input-required", task.last_seq, None)
    assert not AuditEvent.objects.filter(action="task.continued", target_id=str(task.pk)).exists()


def test_repeated_cancels_of_a_running_task_are_audited_once(client_for: Any, alice: Any, agent: Any) -> None:
    from apps.core.models import AuditEvent

    client = client_for(alice)
    task = actions.create_task(org=agent.organization, agent=agent, message={"role": "user", **TEXT})
    Task.objects.for_org(agent.organization).filter(pk=task.pk).update(claimed_by="worker-1")  # a worker runs it
    answers = [post(client, f"/api/v1/tasks/{task.pk}/cancel", {}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.json()["cancel_requested_at"] for a in answers}) == 1  # the first request's moment, kept
    assert {a.json()["status"] for a in answers} == {"submitted"}  # its worker cancels it
    # Its worker was lost and the claim released: a cancel now cancels it at once, audited no more.
    Task.objects.for_org(agent.organization).filter(pk=task.pk).update(claimed_by="")
    last = post(client, f"/api/v1/tasks/{task.pk}/cancel", {})
    assert last.status_code == 202 and last.json()["status"] == "canceled"
    audited = AuditEvent.objects.filter(action="task.canceled", target_id=str(task.pk))
    assert audited.count() == 1


def test_members_send_but_keys_need_scopes(client_for: Any, mia: Any, agent: Any) -> None:
    from rest_framework.test import APIClient

    from apps.core.permissions import Access

    assert post(client_for(mia), "/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT}).status_code == 202
    client = APIClient()
    read_only = Access(org=agent.organization, role="member", user=mia, scopes=frozenset({"tasks:read"}))
    client.force_authenticate(user=mia, token=read_only)
    response = client.post("/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT}, format="json")
    assert response.status_code == 403 and response.json()["error"]["details"] == {"required_scope": "tasks:write"}
    assert client.get("/api/v1/tasks").status_code == 200


def test_idempotency_key_replays_the_same_task(client_for: Any, alice: Any, agent: Any) -> None:
    client = client_for(alice)
    body = {"agent": str(agent.pk), "input": TEXT}
    first = post(client, "/api/v1/tasks", body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(client, "/api/v1/tasks", body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    # The route answers with a trailing slash too: a retry sent there is the same request, not a second task.
    slashed = post(client, "/api/v1/tasks/", body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert slashed.json()["id"] == first.json()["id"] and slashed["Idempotent-Replayed"] == "true"
    other = post(client, "/api/v1/tasks", {**body, "metadata": {"x": 1}}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409
    assert Task.objects.for_org(agent.organization).count() == 1


def test_tasks_per_day_quota_is_a_429(client_for: Any, alice: Any, agent: Any, monkeypatch: Any) -> None:
    from apps.orgs.models import PLAN_LIMITS, PlanLimits

    plan = agent.organization.plan
    monkeypatch.setitem(PLAN_LIMITS, plan, PlanLimits(requests_per_minute=1000, tasks_per_day=2))
    client = client_for(alice)
    body = {"agent": str(agent.pk), "input": TEXT}
    assert [post(client, "/api/v1/tasks", body).status_code for _ in range(3)] == [202, 202, 429]
    refused = post(client, "/api/v1/tasks", body)
    assert refused.json()["error"]["code"] == "quota_exceeded" and refused.has_header("Retry-After")
    assert Task.objects.for_org(agent.organization).count() == 2


def test_deleting_an_org_waits_for_other_orgs_tasks_on_its_agents_and_leaves_them_a_stand_in(
    client_for: Any, alice: Any, charlie: Any, org: Any, other_org: Any
) -> None:
    # Other orgs' tasks held the delete back for good, finished or not: no org can delete a task, so an org whose
    # public agent another org had ever used could never leave.
    from apps.agents.models import Agent

    own = make_agent(org, "echo")
    shared = make_agent(org, "shared", visibility="public")
    actions.create_task(org=org, agent=own, message={"role": "user", **TEXT})
    theirs = actions.create_task(org=other_org, agent=shared, message={"role": "user", **TEXT})
    owner = client_for(alice)
    refused = owner.delete("/api/v1/orgs/acme")
    assert refused.status_code == 409 and refused.json()["error"] == {
        "code": "org_in_use",
        "message": "Acme cannot be deleted while other organizations have tasks in progress on its public agents "
        "(Shared): try again once they have finished (or reached their deadline).",
        "details": {"agents": ["Shared"]},
    }
    assert Task.objects.for_org(org).count() == 1 and Task.objects.for_org(other_org).get(pk=theirs.pk)
    actions.finish(theirs, "completed")
    assert owner.delete("/api/v1/orgs/acme").status_code == 204  # its own tasks go with it
    assert not Task.objects.unscoped("test").filter(organization_id=org.pk).exists()
    # Globex's task keeps its history, on a retired stand-in of the agent in globex's own org.
    kept = Task.objects.for_org(other_org).select_related("agent").get(pk=theirs.pk)
    stand_in = Agent.with_retired.for_org(other_org).get(pk=kept.agent_id)
    assert kept.state == "completed" and kept.events.exists()
    assert (stand_in.name, stand_in.url, stand_in.slug) == ("Shared", shared.url, "gone-shared")
    assert stand_in.retired_at is not None and "which was deleted" in stand_in.description
    assert not Agent.objects.for_org(other_org).exists()  # in no list, takes no task
    assert client_for(charlie).get(f"/api/v1/tasks/{theirs.pk}").status_code == 200


def test_api_paths_tolerate_a_trailing_slash_and_unknown_ones_are_json_404s(
    client_for: Any, alice: Any, agent: Any
) -> None:
    client = client_for(alice)
    created = post(client, "/api/v1/tasks/", {"agent": str(agent.pk), "input": TEXT})  # served, not redirected
    assert created.status_code == 202
    assert client.get(f"/api/v1/tasks/{created.json()['id']}/").json()["id"] == created.json()["id"]
    assert client.get("/api/v1/agents/").json()["results"][0]["id"] == str(agent.pk)
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
    error = missing.json()["error"]
    assert error["code"] == "not_found"
    assert error["message"] == "There is no API endpoint at /api/v1/nothing-here; /api/v1/docs/ lists them."
