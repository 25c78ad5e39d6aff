"""JSON nested past Python's recursion limit, or holding what cannot be stored (NaN, NUL, a lone surrogate), is a
clear 400 wherever Hermes reads JSON, before anything is written — not a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apps.core import jsonutil
from apps.orgs.models import Organization
from apps.tasks.forms import TaskForm
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db
ABYSS = "[" * 100_000 + "]" * 100_000


def test_loads_raises_the_decode_error_callers_already_handle() -> None:
    with pytest.raises(json.JSONDecodeError, match="the JSON nests too deeply to be read"):
        jsonutil.loads(ABYSS)
    with pytest.raises(ValueError):  # what cards, the federation inbox and the ping endpoint catch
        jsonutil.loads(ABYSS.encode())
    assert jsonutil.loads(b'{"a": [1]}') == {"a": [1]}


def test_the_api_answers_400_even_unauthenticated(client: Client, client_for: Any, alice: Any) -> None:
    response = client.post("/api/v1/auth/register", ABYSS, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    error = response.json()["error"]
    assert (
        error["code"] == "parse_error" and error["message"] == "JSON parse error - the JSON nests too deeply to be read"
    )
    assert client_for(alice).post("/api/v1/tasks", ABYSS, content_type="application/json").status_code == 400


def test_the_console_form_says_so_next_to_the_field() -> None:
    form = TaskForm({"agent": "", "text": "", "structured": "{" + '"a": {' * 5000 + "}" * 5001}, agents=[])
    assert not form.is_valid()
    assert form.errors["structured"] == ["Not valid JSON: The JSON nests too deeply to be read."]


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ('{"x": {"v": "\\ud800"}}', "the string at $.x.v holds a lone surrogate (U+D800), which is not valid Unicode"),
        ('{"x": ["a", "b\\u0000c"]}', "the string at $.x[1] holds a NUL character (\\u0000), which cannot be stored"),
        (
            '{"x": {"\\udfff": 1}}',
            "the string at $.x (a key) holds a lone surrogate (U+DFFF), which is not valid Unicode",
        ),
        ('{"x": NaN}', "NaN is not a JSON number"),
        ('{"x": -Infinity}', "-Infinity is not a JSON number"),
        ('{"x": [1.5, -1e400]}', "the number -1e400 is too large to store"),
    ],
)
def test_what_cannot_be_stored_is_refused_with_where_it_is(body: str, refusal: str) -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        jsonutil.loads(body)
    assert str(caught.value) == refusal


def test_escapes_that_decode_to_storable_text_pass() -> None:
    # A surrogate pair is one character; an escaped backslash before "u0000" is not a NUL.
    assert jsonutil.loads('{"x": "\\ud83d\\ude00", "y": "\\\\u0000"}') == {"x": "\U0001f600", "y": "\\u0000"}


def test_a_body_is_read_as_utf8_whatever_charset_its_content_type_names(client_for: Any, alice: Any, org: Any) -> None:
    # RFC 8259: JSON is UTF-8. Decoded by the label, "é" sent as UTF-8 marked latin-1 was stored as "Ã©".
    api = client_for(alice)
    body = '{"name": "Acmé"}'.encode()
    response = api.patch("/api/v1/orgs/acme", body, content_type="application/json; charset=latin-1")
    assert response.status_code == 200, response.content[:300]
    org.refresh_from_db()
    assert org.name == "Acmé"
    # Bytes that are not UTF-8 at all (a latin-1 "é") are refused, saying why; nothing is written.
    refused = api.patch("/api/v1/orgs/acme", '{"name": "Acmè"}'.encode("latin-1"), content_type="application/json")
    assert refused.status_code == 400 and refused.json()["error"] == {
        "code": "parse_error",
        "message": "JSON parse error - the body is not UTF-8 (byte 13): JSON bodies are UTF-8, whatever charset the "
        "Content-Type names.",
        "details": {},
    }
    org.refresh_from_db()
    assert org.name == "Acmé"


def test_tasks_and_federation_messages_refuse_them_and_write_nothing(client_for: Any, alice: Any, org: Any) -> None:
    from apps.federation.models import Message
    from apps.tasks.models import Task

    api = client_for(alice)
    for path, body in [
        ("/api/v1/tasks", '{"agent": "x", "input": {"parts": [{"data": {"v": "\\ud800"}}]}}'),
        ("/api/v1/tasks", '{"agent": "x", "input": {"parts": [{"text": "hi"}]}, "metadata": {"v": "a\\u0000"}}'),
        ("/api/v1/federation/messages", '{"recipient": "acme", "payload": {"v": "\\ud800"}}'),
    ]:
        response = api.post(path, body, content_type="application/json")
        assert response.status_code == 400, (path, response.content[:300])
        assert response.json()["error"]["code"] == "parse_error"
    assert not Task.objects.for_org(org).exists() and not Message.objects.for_org(org).exists()


def test_the_console_json_field_names_the_bad_string() -> None:
    form = TaskForm({"agent": "", "text": "", "structured": '{"v": "\\u0000"}'}, agents=[])
    assert not form.is_valid()
    assert form.errors["structured"] == [
        "Not valid JSON: The string at $.v holds a NUL character (\\u0000), which cannot be stored."
    ]


def test_too_many_query_parameters_is_a_json_400_naming_the_limit(client: Client, client_for: Any, alice: Any) -> None:
    flood = "&".join(f"p{i}=1" for i in range(1001))
    for api in (client, client_for(alice)):  # refused before authentication matters
        response = api.get(f"/api/v1/tasks?{flood}")
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "too_many_parameters",
            "message": "The request has more than 1000 query or form parameters.",
            "details": {},
        }
    console = Client()
    console.force_login(alice)
    page = console.get(f"/tasks/?{flood}")
    assert page.status_code == 400 and "more than 1000 query or form parameters" in page.content.decode()


def test_too_many_query_parameters_with_debug_on_is_the_same_400(client: Client, settings: Any) -> None:
    # With DEBUG, Django's technical error page read the query again and failed again, for seconds: a 500.
    settings.DEBUG = True
    flood = "&".join(f"p{i}=1" for i in range(1001))
    page = client.get(f"/accounts/login/?{flood}")
    assert page.status_code == 400 and "more than 1000 query or form parameters" in page.content.decode()
    assert client.get(f"/api/v1/me?{flood}").json()["error"]["code"] == "too_many_parameters"


def test_an_operation_that_reads_no_body_refuses_one(client_for: Any, alice: Any, charlie: Any, org: Any) -> None:
    from apps.tasks import actions
    from tests.tasks.conftest import make_agent

    agent = make_agent(org, "echo")

    def task() -> Any:
        return actions.create_task(org=org, agent=agent, message={"parts": [{"text": "hi"}]})

    api = client_for(alice)
    url = f"/api/v1/tasks/{task().pk}/cancel"
    refused = api.post(url, {"reason": "because", "force": True}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["details"] == {
        "force": ["Unknown field: this endpoint takes no body."],
        "reason": ["Unknown field: this endpoint takes no body."],
    }
    assert api.post(url, "[1]", content_type="application/json").json()["error"]["details"] == {
        "non_field_errors": ["This endpoint takes no body."]
    }
    assert api.post(url, "{bad", content_type="application/json").json()["error"]["code"] == "parse_error"
    assert api.post(url, "stop", content_type="text/plain").status_code == 415
    assert Task.objects.for_org(org).get(pk=url.split("/")[4]).state == "submitted"  # nothing was canceled
    # Another org's task stays a 404 whatever the body.
    assert client_for(charlie).post(url, {"reason": "x"}, format="json").status_code == 404
    assert api.post(url, {}, format="json").status_code == 202
    assert api.post(f"/api/v1/tasks/{task().pk}/cancel").status_code == 202
    # An empty form, as a bare form post (or Django's test client) sends it, is no body either.
    assert api.post(f"/api/v1/tasks/{task().pk}/cancel", {}, format="multipart").status_code == 202
    assert api.post(url, {"reason": "x"}, format="multipart").status_code == 415
    # A DELETE reads no body either: refused, and nothing deleted.
    refused = api.delete(f"/api/v1/agents/{agent.pk}", {"dry_run": True}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["details"] == {
        "dry_run": ["Unknown field: this endpoint takes no body."]
    }
    agent.refresh_from_db()
    assert agent.retired_at is None
    # The orgs endpoint is outside the org scope (it lists a session's orgs) and deleted one whatever it was sent.
    doomed = api.delete("/api/v1/orgs/acme", {"dry_run": True}, format="json")
    assert doomed.status_code == 400 and doomed.json()["error"]["details"] == {
        "dry_run": ["Unknown field: this endpoint takes no body."]
    }
    assert api.delete("/api/v1/orgs/acme", "hi", content_type="text/plain").status_code == 415
    assert client_for(charlie).delete("/api/v1/orgs/acme", {"x": 1}, format="json").status_code == 404
    assert Organization.objects.filter(pk=org.pk).exists()


def test_integer_parameters_of_thousands_of_digits_are_no_500(client_for: Any, alice: Any, org: Any) -> None:
    """int() refuses strings of 4,301 digits or more (ValueError): every list's page_size, a timeline's after and
    limit, the usage days and SSE's Last-Event-ID answered a 500. Such a value is larger than any: clamped where a
    maximum is documented, past the end for a cursor."""
    from apps.tasks import actions
    from tests.tasks.conftest import make_agent

    task = actions.create_task(org=org, agent=make_agent(org, "echo"), message={"parts": [{"text": "hi"}]})
    huge = "9" * 5000
    api = client_for(alice)
    assert api.get(f"/api/v1/tasks?page_size={huge}").status_code == 200
    assert len(api.get(f"/api/v1/usage?days={huge}").json()["days"]) == 35
    events = api.get(f"/api/v1/tasks/{task.pk}/events?after={huge}&limit={huge}").json()
    assert events["results"] == [] and events["last_seq"] == task.last_seq
    assert api.get(f"/api/v1/tasks?page_size=-{huge}").json()["error"]["details"] == {
        "page_size": ["A whole number from 1 to 200."]
    }


def test_a_nul_in_the_url_is_a_400_everywhere(client_for: Any, alice: Any, org: Any) -> None:
    """PostgreSQL refuses NUL in any text it compares: a search or a slug lookup holding `%00` was a 500."""
    api = client_for(alice)
    for url in (
        "/api/v1/marketplace?q=a%00b",
        "/api/v1/audit?action=a%00b",
        "/api/v1/orgs/%00",
        "/api/v1/federation/peers/a%00b",
    ):
        response = api.get(url)
        assert response.status_code == 400, url
        assert response.json()["error"] == {
            "code": "invalid",
            "message": "The URL contains a NUL character (%00), which no name, id or filter value can hold.",
            "details": {},
        }
    page = api.get("/marketplace/?q=a%00b")
    assert page.status_code == 400 and "NUL character" in page.content.decode()


def test_a_chunked_body_is_a_411_not_an_empty_body(rf: Any) -> None:
    """Django reads a body by its Content-Length: a chunked one was read as empty, silently."""
    from apps.core.middleware import RequestContextMiddleware

    def view(request: Any) -> Any:
        raise AssertionError("the view must not run on a body nobody can read")

    request = rf.post("/api/v1/tasks", b'{"agent": "x"}', content_type="application/json")
    del request.META["CONTENT_LENGTH"]
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    response = RequestContextMiddleware(view)(request)
    assert response.status_code == 411 and json.loads(response.content)["error"]["code"] == "length_required"
    request = rf.post("/tasks/new/", b"text=hi", content_type="application/x-www-form-urlencoded")
    del request.META["CONTENT_LENGTH"]
    request.META["HTTP_TRANSFER_ENCODING"] = "Chunked"
    assert RequestContextMiddleware(view)(request).status_code == 411
