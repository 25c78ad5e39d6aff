"""The OpenAPI document against the API it describes: every operation documents the errors it answers in the one
error envelope, and live responses (successes and errors) validate against the schema of their status."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import pytest
from django import urls
from django.db import OperationalError
from django.test.client import FakePayload
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.plumbing import get_doc
from drf_spectacular.types import OpenApiTypes
from jsonschema import Draft202012Validator
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.agents.models import Agent
from apps.core import checks
from apps.core.api import (
    TOLERATED_QUERY_PARAMETERS,
    OrgScopedMixin,
    RefuseUnreadBodyMixin,
    describe,
    query_parameters,
)
from apps.core.idempotency import IdempotentCreateMixin
from apps.federation.actions import audit
from apps.federation.models import AuditEvent
from apps.tasks.api import TaskViewSet
from apps.tasks.models import Task
from tests.factories import issue_api_key, key_client

pytestmark = pytest.mark.django_db

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
TEXT = {"parts": [{"text": "hi"}]}


@pytest.fixture
def schema(client_for: Any, alice: Any) -> dict[str, Any]:
    response = client_for(alice).get("/api/v1/schema/?format=json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return dict(response.json())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


# --- The document ----------------------------------------------------------------------------------------------


def test_the_error_envelope_is_a_component(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert components["ErrorEnvelope"]["properties"] == {"error": {"$ref": "#/components/schemas/Error"}}
    assert components["ErrorEnvelope"]["required"] == ["error"]
    error = components["Error"]
    assert set(error["properties"]) == set(error["required"]) == {"code", "message", "details"}
    assert error["properties"]["details"]["type"] == "object"


def test_every_error_response_is_the_envelope_and_names_its_codes(schema: dict[str, Any]) -> None:
    for method, path, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            assert response["content"] == {"application/json": {"schema": ENVELOPE}}, (method, path, status)
            assert "`" in response["description"], f"{method} {path} {status}: name the error codes"


def test_errors_follow_from_what_an_operation_does(schema: dict[str, Any]) -> None:
    public = {"/api/v1/auth/register", "/api/v1/auth/password/reset", "/api/v1/auth/password/reset/confirm"}
    for method, path, operation in _operations(schema):
        statuses = set(operation["responses"])
        where = f"{method} {path}"
        assert "429" in statuses, where  # every operation is throttled (per org, or per address when public)
        assert operation["responses"]["429"]["headers"].keys() >= {"Retry-After", "X-RateLimit-Reset"}, where
        if path in public:
            assert not statuses & {"401", "403"}, where
        else:
            assert "401" in statuses and "WWW-Authenticate" in operation["responses"]["401"]["headers"], where
        if "requestBody" in operation:
            assert {"400", "415"} <= statuses, where
            assert list(operation["requestBody"]["content"]) == ["application/json"], where
        if "{" in path:
            assert "404" in statuses, where
        if any(p["in"] == "query" and p["name"] != "q" for p in operation.get("parameters", [])):
            assert "400" in statuses, where
        assert "format" not in {p["name"] for p in operation.get("parameters", [])}, where
        # The middleware refuses a chunked body of any unsafe method; every operation reads the database.
        assert ("411" in statuses) == (method not in {"GET", "HEAD", "OPTIONS"}), where
        if "411" in statuses:
            assert "`length_required`" in operation["responses"]["411"]["description"], where
        outage = operation["responses"]["503"]
        assert "`database_unavailable`" in outage["description"] and "Retry-After" in outage["headers"], where
        # Content negotiation: an Accept header no renderer of the operation matches.
        assert "`not_acceptable`" in operation["responses"]["406"]["description"], where


def test_an_operation_takes_exactly_the_query_parameters_its_schema_declares(schema: dict[str, Any]) -> None:
    """What the API refuses as unknown (apps.core.api._refuse_query) and what the schema documents are one list."""
    unchecked = []
    for method, path, operation in _operations(schema):
        where = f"{method} {path}"
        declared = {
            p["name"]: p["schema"].get("type") == "array" for p in operation.get("parameters", []) if p["in"] == "query"
        }
        assert not TOLERATED_QUERY_PARAMETERS & set(declared), where
        view_function = urls.resolve(path.replace("{", "").replace("}", "")).func
        actions = getattr(view_function, "actions", None)
        name = actions[method.lower()] if actions else method.lower()
        view = view_function.cls(**view_function.initkwargs)
        if not isinstance(view, RefuseUnreadBodyMixin):
            unchecked.append(where)
        assert query_parameters(view, name) == declared, where
        if declared or "400" in operation["responses"]:
            assert "a query parameter it does not take" in operation["responses"]["400"]["description"], where
    assert not unchecked, f"these views do not check their query (mix in RefuseUnreadBodyMixin): {unchecked}"


def test_operation_specific_errors(schema: dict[str, Any]) -> None:
    paths = schema["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return {code for code in paths[path][method]["responses"] if not code.startswith("2")}

    # Every write may meet a chunked body (411) and every operation a database outage (503).
    write = {"400", "401", "403", "404", "406", "409", "411", "415", "429", "503"}
    assert statuses("/api/v1/tasks", "post") == write | {"413"}
    # A cancel reads no body, and refuses one: 400 for JSON it does not take, 415 for another media type.
    assert statuses("/api/v1/tasks/{id}/cancel", "post") == write
    assert "a body was sent" in paths["/api/v1/tasks/{id}/cancel"]["post"]["responses"]["400"]["description"]
    assert statuses("/api/v1/tasks/{id}/messages", "post") == write | {"413"}
    # Reads without parameters answer no 409, and a 400 only for a flood of query parameters or a key naming
    # another org; GET /me checks no permission beyond being signed in (its 403: an `X-Hermes-Org` naming no org).
    assert statuses("/api/v1/tasks/{id}", "get") == {"400", "401", "403", "404", "406", "429", "503"}
    assert statuses("/api/v1/me", "get") == {"400", "401", "403", "406", "429", "503"}
    # The stream is the one operation answering another media type than JSON, and says so.
    unacceptable = paths["/api/v1/tasks/{id}/stream"]["get"]["responses"]["406"]["description"]
    assert "application/json or text/event-stream" in unacceptable
    read = paths["/api/v1/tasks/{id}"]["get"]["responses"]["400"]["description"]
    assert "too_many_parameters" in read and "org_mismatch" in read
    assert "task_finished" in paths["/api/v1/tasks/{id}/cancel"]["post"]["responses"]["409"]["description"]
    assert "missing_scope" in paths["/api/v1/tasks"]["post"]["responses"]["403"]["description"]
    assert "tasks_per_day" in paths["/api/v1/tasks"]["post"]["responses"]["429"]["description"]


def test_every_operation_says_what_it_does(schema: dict[str, Any]) -> None:
    bare = [
        f"{method} {path}"
        for method, path, operation in _operations(schema)
        if not operation.get("summary") or not operation.get("description", "").partition("\n\n")[2].strip()
    ]
    assert not bare, f"give these a summary and notes with apps.core.api.describe(...): {bare}"
    descriptions = [operation.get("description", "") for _, _, operation in _operations(schema)]
    assert not [d for d in descriptions if "Wraps the `create`" in d]  # a mixin's docstring is no description


def test_a_component_is_described_by_its_own_serializer_only(schema: dict[str, Any]) -> None:
    """drf-spectacular takes the first docstring of a serializer's MRO: StrictFieldsMixin's implementation notes
    described 21 request bodies, and PatchSerializer's two PATCH bodies. A docstring of apps.core describes only
    the component of that class itself (`Error`, `AuditPerson`, ...)."""
    core_docs: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        if name == "apps.core" or name.startswith("apps.core."):
            for cls in vars(module).values():
                if inspect.isclass(cls) and cls.__module__ == name and cls.__dict__.get("__doc__"):
                    core_docs[get_doc(cls)] = cls.__name__.removesuffix("Serializer")
    components = schema["components"]["schemas"]
    borrowed = {
        name: core_docs[component["description"]]
        for name, component in components.items()
        if component.get("description") in core_docs
        and name.removeprefix("Patched") != core_docs[component["description"]]
    }
    assert not borrowed, f"components described by a base class of apps.core: {borrowed}"
    assert "description" not in components["TaskCreate"]  # a StrictFieldsMixin body without a docstring of its own
    assert "description" not in components["PatchedAgentUpdate"]  # a PatchSerializer one
    assert components["ForeignAgent"]["description"].startswith("Another org's public agent read by id")


def test_the_task_list_documents_its_filters_and_the_timeline_its_page(schema: dict[str, Any]) -> None:
    listing = {p["name"]: p for p in schema["paths"]["/api/v1/tasks"]["get"]["parameters"]}
    assert {"status", "agent", "cursor", "page_size"} <= set(listing)
    assert "input-required" in listing["status"]["schema"]["items"]["enum"]  # repeatable: an array of statuses
    events = schema["paths"]["/api/v1/tasks/{id}/events"]["get"]
    assert {p["name"] for p in events["parameters"] if p["in"] == "query"} == {"after", "limit"}
    page = schema["components"]["schemas"]["TaskTimeline"]
    assert set(page["properties"]) == {"task_id", "status", "last_seq", "results", "next_after"}
    assert page["properties"]["next_after"]["nullable"] is True


def test_the_schema_still_comes_as_yaml_and_ignores_a_format_it_does_not_have(client_for: Any, alice: Any) -> None:
    client = client_for(alice)
    assert client.get("/api/v1/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")
    assert client.get("/api/v1/schema/?format=yaml").content.startswith(b"openapi:")
    assert client.get("/api/v1/schema/?format=xml").status_code == 200


# --- Live responses against it --------------------------------------------------------------------------------


def _json_schema(node: Any, *, closed: bool = True) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes a null type, and objects are closed, so a response
    field the schema does not declare fails as surely as a declared one that is missing or of the wrong type.

    `closed=False` reads the schema as a standard OpenAPI validator does, objects accepting undeclared fields: what
    a `oneOf` must hold up against (test_an_agent_read_matches_exactly_one_of_its_answers)."""
    if isinstance(node, list):
        return [_json_schema(item, closed=closed) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _json_schema(value, closed=closed) for key, value in node.items() if key not in {"nullable", "readOnly"}
    }
    if "properties" in node:
        out["properties"] = {name: _json_schema(value, closed=closed) for name, value in node["properties"].items()}
        if closed:
            out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def check(schema: dict[str, Any], method: str, path: str, response: Any) -> Any:
    """Assert the response is documented for its status and its body validates; returns the body."""
    operation = schema["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path} answered an undocumented {response.status_code}"
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in documented.get("content", {}), f"{method} {path} {response.status_code}: {media_type}"
    body = response.json()
    target = documented["content"][media_type]["schema"]
    document = {**_json_schema(target), "components": _json_schema(schema["components"])}
    errors = sorted(Draft202012Validator(document).iter_errors(body), key=str)
    assert not errors, f"{method} {path} {response.status_code}: {[e.message for e in errors]}\n{body}"
    return body


def post(client: Any, url: str, body: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


@pytest.fixture
def agent(org: Any) -> Agent:
    # As the built-in demo agents: nobody created it (`created_by` is null).
    return Agent.objects.create(
        organization=org, slug="echo", name="Echo", url="http://127.0.0.1:9/demo-agents/echo/", created_by=None
    )


def test_task_responses_match_the_schema(
    schema: dict[str, Any], client_for: Any, alice: Any, agent: Agent, settings: Any
) -> None:
    client = client_for(alice)
    task = check(
        schema, "POST", "/api/v1/tasks", post(client, "/api/v1/tasks", {"agent": str(agent.pk), "input": TEXT})
    )
    task_path = f"/api/v1/tasks/{task['id']}"
    check(schema, "GET", "/api/v1/tasks", client.get("/api/v1/tasks", {"status": "submitted", "agent": agent.pk}))
    check(schema, "GET", "/api/v1/tasks/{id}", client.get(task_path))
    page = check(schema, "GET", "/api/v1/tasks/{id}/events", client.get(f"{task_path}/events", {"limit": 1}))
    assert page["task_id"] == task["id"] and page["next_after"] == 1 and "task_id" not in page["results"][0]
    last = check(schema, "GET", "/api/v1/tasks/{id}/events", client.get(f"{task_path}/events", {"after": 1}))
    assert last["next_after"] is None
    check(schema, "GET", "/api/v1/agents", client.get("/api/v1/agents"))  # created_by: null
    own = check(schema, "GET", "/api/v1/agents/{id}", client.get(f"/api/v1/agents/{agent.pk}"))
    assert own["owned"] is True and "card" in own
    # Another org's public agent: its listing, which the schema documents too (oneOf).
    from apps.orgs.models import Organization

    elsewhere = Organization.objects.create(name="Initech", slug="initech")
    public = Agent.objects.create(
        organization=elsewhere, slug="pub", name="Pub", url="http://127.0.0.1:9/pub/", visibility="public"
    )
    foreign = check(schema, "GET", "/api/v1/agents/{id}", client.get(f"/api/v1/agents/{public.pk}"))
    assert foreign["owned"] is False and "url" not in foreign

    # Errors, each in the envelope and documented for its operation.
    check(schema, "POST", "/api/v1/tasks", post(client, "/api/v1/tasks", {"agent": str(agent.pk)}))  # 400
    unknown = {"agent": "00000000-0000-0000-0000-000000000000", "input": TEXT}
    assert check(schema, "POST", "/api/v1/tasks", post(client, "/api/v1/tasks", unknown))["error"]["code"] == (
        "agent_not_found"
    )
    form = client.post("/api/v1/tasks", {"agent": str(agent.pk)})  # multipart: the API only reads JSON
    assert check(schema, "POST", "/api/v1/tasks", form)["error"]["code"] == "unsupported_media_type"
    check(schema, "GET", "/api/v1/tasks", client.get("/api/v1/tasks", {"status": "sleeping"}))  # 400
    # A query parameter the operation does not read, or a single one given twice, is refused, not ignored.
    typo = check(schema, "GET", "/api/v1/tasks", client.get("/api/v1/tasks", {"statuses": "failed", "limit": 1}))
    assert typo["error"]["details"] == {
        name: ["Unknown query parameter: this endpoint takes 'status', 'agent', 'cursor', 'page_size'."]
        for name in ("statuses", "limit")
    }
    twice = check(schema, "GET", "/api/v1/tasks", client.get("/api/v1/tasks", {"page_size": [1, 2]}))
    assert twice["error"]["details"] == {"page_size": ["Give this parameter once (it came 2 times)."]}
    both = client.get("/api/v1/tasks", {"status": ["failed", "submitted"], "format": "json"})
    assert [t["id"] for t in check(schema, "GET", "/api/v1/tasks", both)["results"]] == [task["id"]]
    unread = check(schema, "GET", "/api/v1/tasks/{id}", client.get(task_path, {"expand": "agent"}))
    assert unread["error"]["details"] == {
        "expand": ["Unknown query parameter: this endpoint takes no query parameters."]
    }
    check(schema, "GET", "/api/v1/tasks/{id}/stream", client.get(f"{task_path}/stream", {"after": "x"}))  # 400 JSON
    xml = check(schema, "GET", "/api/v1/tasks/{id}", client.get(task_path, HTTP_ACCEPT="application/xml"))  # 406
    assert xml["error"] == {
        "code": "not_acceptable",
        "message": "The Accept header asks for 'application/xml'; this endpoint answers application/json.",
        "details": {},
    }
    html = check(schema, "GET", "/api/v1/tasks/{id}/stream", client.get(f"{task_path}/stream", HTTP_ACCEPT="text/html"))
    assert html["error"]["message"].endswith("this endpoint answers application/json or text/event-stream.")
    check(schema, "POST", "/api/v1/tasks/{id}/messages", post(client, f"{task_path}/messages", {"input": TEXT}))  # 409
    check(schema, "POST", "/api/v1/tasks/{id}/cancel", client.post(f"{task_path}/cancel"))  # 202
    assert Task.objects.for_org(agent.organization).get(pk=task["id"]).is_terminal
    again = check(schema, "POST", "/api/v1/tasks/{id}/cancel", client.post(f"{task_path}/cancel"))
    assert again["error"]["code"] == "task_finished"
    settings.HERMES_MAX_TASK_INPUT_BYTES = 64
    large = {"agent": str(agent.pk), "input": {"parts": [{"text": "x" * 100}]}}
    assert check(schema, "POST", "/api/v1/tasks", post(client, "/api/v1/tasks", large))["error"]["code"] == (
        "input_too_large"
    )
    check(schema, "GET", "/api/v1/tasks/{id}", client_for(alice).get("/api/v1/tasks/no-such-task"))  # 404


def test_a_format_parameter_is_ignored_rather_than_a_404(client_for: Any, alice: Any, agent: Agent) -> None:
    client = client_for(alice)
    for value in ("json", "xml", "sse"):
        response = client.get("/api/v1/tasks", {"format": value})
        assert response.status_code == 200 and response["Content-Type"] == "application/json"


def test_authentication_permission_and_quota_errors_match_the_schema(
    schema: dict[str, Any], api: Any, alice: Any, org: Any, agent: Agent
) -> None:
    check(schema, "GET", "/api/v1/tasks", api.get("/api/v1/tasks"))  # 401
    _, plaintext = issue_api_key(alice, org, scopes=["tasks:read"], rate_limit_per_minute=1)
    client = key_client(plaintext)
    refused = check(schema, "POST", "/api/v1/tasks", post(client, "/api/v1/tasks", {"agent": str(agent.pk)}))
    assert refused["error"]["code"] == "missing_scope"  # refused requests do not count
    check(schema, "GET", "/api/v1/tasks", client.get("/api/v1/tasks"))
    limited = client.get("/api/v1/tasks")
    assert limited.status_code == 429 and "Retry-After" in limited
    check(schema, "GET", "/api/v1/tasks", limited)


def test_nullable_fields_match_the_schema(
    schema: dict[str, Any], client_for: Any, alice: Any, org: Any, settings: Any
) -> None:
    client = client_for(alice)
    key, _ = issue_api_key(alice, org, scopes=["tasks:read"])
    check(schema, "GET", "/api/v1/keys", client.get("/api/v1/keys"))  # rotated_to: null
    check(schema, "POST", "/api/v1/keys/{id}/rotate", post(client, f"/api/v1/keys/{key.pk}/rotate", {}))
    check(schema, "GET", "/api/v1/keys", client.get("/api/v1/keys"))  # and an id
    audit(AuditEvent.REQUEUED, org=org, reason="no link involved")
    entries = check(schema, "GET", "/api/v1/federation/audit", client.get("/api/v1/federation/audit"))
    assert entries["results"][0]["peer"] is None


def test_the_audit_log_matches_the_schema(schema: dict[str, Any], client_for: Any, alice: Any, org: Any) -> None:
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/audit"]["get"]["parameters"]}
    assert {"action", "cursor", "page_size"} <= set(parameters)
    assert parameters["action"]["schema"]["type"] == "array"  # repeatable
    key, plaintext = issue_api_key(alice, org, scopes=["org:audit", "org:admin"])
    key_client(plaintext).post("/api/v1/invitations", {"email": "zoe@example.test"}, format="json")
    from apps.core.audit import record

    record("probe.system", org=org)  # no actor, no key, no target
    page = check(schema, "GET", "/api/v1/audit", client_for(alice).get("/api/v1/audit"))
    system, by_key = page["results"][:2]
    assert system["actor"] is None and system["api_key"] is None and system["target_type"] == ""
    assert by_key["api_key"]["display"] == key.display and by_key["actor"]["email"] == "alice@acme.test"
    check(schema, "GET", "/api/v1/audit", client_for(alice).get("/api/v1/audit", {"page_size": "x"}))  # 400
    refused = check(
        schema,
        "GET",
        "/api/v1/audit",
        key_client(issue_api_key(alice, org, scopes=["org:read"])[1]).get("/api/v1/audit"),
    )
    assert refused["error"]["code"] == "missing_scope"


def test_an_agent_read_matches_exactly_one_of_its_answers(
    schema: dict[str, Any], client_for: Any, alice: Any, agent: Agent, other_org: Any
) -> None:
    """GET /agents/{id} is a `oneOf` AgentDetail and ForeignAgent. Read as OpenAPI 3.0 reads it, objects open to
    undeclared fields, an owner's AgentDetail matched ForeignAgent too, so a standard validator refused it."""
    public = Agent.objects.create(
        organization=other_org, slug="pub", name="Pub", url="http://127.0.0.1:9/pub/", visibility="public"
    )
    target = schema["paths"]["/api/v1/agents/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
    components = _json_schema(schema["components"], closed=False)
    branches = components["schemas"][target["schema"]["$ref"].rsplit("/", 1)[-1]]["oneOf"]
    client = client_for(alice)
    for agent_id, answer in ((agent.pk, "AgentDetail"), (public.pk, "ForeignAgent")):
        response = client.get(f"/api/v1/agents/{agent_id}")
        assert response.status_code == 200
        body = response.json()
        document = {**_json_schema(target["schema"], closed=False), "components": components}
        errors = [error.message for error in Draft202012Validator(document).iter_errors(body)]
        assert not errors, f"{answer}: {errors}"
        matching = [
            branch["$ref"].rsplit("/", 1)[-1]
            for branch in branches
            if Draft202012Validator({**branch, "components": components}).is_valid(body)
        ]
        assert matching == [answer]


IDEMPOTENT = {
    ("POST", "/api/v1/tasks"),
    ("POST", "/api/v1/agents"),
    ("POST", "/api/v1/invitations"),
    ("POST", "/api/v1/federation/messages"),
    ("POST", "/api/v1/federation/remote-tasks"),
}


def _assert_declares_idempotency(operation: dict[str, Any], where: str) -> None:
    (key,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and not key.get("required") and key["schema"]["maxLength"] == 255, where
    for status, response in operation["responses"].items():
        replayed = response.get("headers", {}).get("Idempotent-Replayed")
        if status.startswith("2"):
            assert replayed is not None and replayed["schema"]["enum"] == ["true"], where
        else:
            assert replayed is None, where  # errors are not remembered, so never replayed
    assert "`invalid_idempotency_key`" in operation["responses"]["400"]["description"], where
    assert "`idempotency_conflict`" in operation["responses"]["409"]["description"], where


def test_operations_that_honour_an_idempotency_key_declare_it_and_its_replay(
    schema: dict[str, Any], client_for: Any, alice: Any, agent: Agent
) -> None:
    declaring = {
        (method, path)
        for method, path, operation in _operations(schema)
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    }
    assert declaring == IDEMPOTENT
    for method, path in sorted(IDEMPOTENT):
        operation = schema["paths"][path][method.lower()]
        _assert_declares_idempotency(operation, f"{method} {path}")
        # Said once per code, whether derived or in the operation's own words.
        assert operation["responses"]["409"]["description"].count("`idempotency_conflict`") == 1

    client = client_for(alice)
    body = json.dumps({"agent": str(agent.pk), "input": TEXT})
    first = client.post("/api/v1/tasks", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="retry-1")
    again = client.post("/api/v1/tasks", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert check(schema, "POST", "/api/v1/tasks", again) == check(schema, "POST", "/api/v1/tasks", first)
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    declared = schema["paths"]["/api/v1/tasks"]["post"]["responses"][str(again.status_code)]["headers"]
    assert "Idempotent-Replayed" in declared


class _MixedInCreate:
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({}, status=201)


class _ProbeWithTheMixin(IdempotentCreateMixin, _MixedInCreate, OrgScopedMixin, viewsets.ViewSet):  # type: ignore[misc]
    @describe(
        "Create a probe",
        action="tasks:write",
        notes="A probe.",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)


class _ProbeWithout(OrgScopedMixin, viewsets.ViewSet):  # type: ignore[misc]
    @describe(
        "Act on a probe",
        action="tasks:write",
        notes="Honours no key.",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
    )
    def create(self, request: Request) -> Response:
        return Response({})


def test_a_new_idempotent_endpoint_declares_the_key_without_being_told() -> None:
    """The one way to honour `Idempotency-Key` (docs/api.md) is IdempotentCreateMixin before the class with the
    `create`. The schema derives the declarations from it, so no endpoint can forget them."""
    patterns = [
        urls.path("api/v1/mixed-in", _ProbeWithTheMixin.as_view({"post": "create"})),
        urls.path("api/v1/without", _ProbeWithout.as_view({"post": "create"})),
    ]
    paths = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)["paths"]
    _assert_declares_idempotency(paths["/api/v1/mixed-in"]["post"], "mixin")
    act = paths["/api/v1/without"]["post"]
    assert "Idempotency-Key" not in {p["name"] for p in act.get("parameters", [])}
    assert "409" not in act["responses"] and "Idempotent-Replayed" not in act["responses"]["200"].get("headers", {})


def test_a_chunked_body_and_a_database_outage_match_the_schema(
    schema: dict[str, Any], client_for: Any, alice: Any, agent: Agent, monkeypatch: Any
) -> None:
    client = client_for(alice)
    # Through the whole stack, as a proxy forwards it: Transfer-Encoding and no Content-Length.
    chunked = client.request(
        REQUEST_METHOD="POST",
        PATH_INFO="/api/v1/tasks",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": FakePayload(b'{"agent": "x"}')},
    )
    assert check(schema, "POST", "/api/v1/tasks", chunked)["error"]["code"] == "length_required"

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(TaskViewSet, "list", refuse)
    monkeypatch.setattr(checks, "database_reachable", lambda: False)
    outage = client.get("/api/v1/tasks")
    assert check(schema, "GET", "/api/v1/tasks", outage)["error"]["code"] == "database_unavailable"
    assert outage["Retry-After"] == "5"
