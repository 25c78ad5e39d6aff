"""The agents API: registration by card and by hand, reads resolved inside the caller's org, scopes and roles,
bad input with precise errors, demo assignment and the marketplace."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import actions
from apps.agents.models import Agent, Visibility
from apps.core.models import AuditEvent
from tests.agents.conftest import CardServer, v1_card
from tests.factories import issue_api_key, key_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_allowlist(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []


def _manual(org: Any, name: str, **kwargs: Any) -> Agent:
    return actions.register_agent_manually(org=org, name=name, url=f"https://{name.lower()}.example.com/", **kwargs)


def test_register_by_card_through_the_api(card_server: CardServer, org: Any, dave: Any, client_for: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    response = client_for(dave).post("/api/v1/agents", {"url": card_server.base}, format="json")
    assert response.status_code == 201, response.data
    body = response.data
    assert body["name"] == "Weather Bot" and body["slug"] == "weather-bot" and body["streaming"] is True
    assert body["card"]["name"] == "Weather Bot" and body["owned"] is True and body["organization"] == "acme"
    assert body["created_by"] == "dave@acme.test" and body["visibility"] == "private"
    event = AuditEvent.objects.get(action="agent.registered")
    assert event.actor == dave and event.org_id == org.pk and event.target_id == body["id"]


def test_register_manually_through_the_api(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    payload = {
        "mode": "manual",
        "url": "https://agent.example.com/rpc",
        "name": "Hand Made",
        "streaming": True,
        "visibility": "public",
    }
    response = client_for(alice).post("/api/v1/agents", payload, format="json")
    assert response.status_code == 201, response.data
    assert response.data["card"] == {} and response.data["streaming"] and response.data["visibility"] == "public"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "url"),
        ({"url": "not a url"}, "url"),
        ({"mode": "manual", "url": "https://a.example.com/"}, "name"),
        ({"url": "https://a.example.com/", "name": "x"}, "name"),
        ({"url": "https://a.example.com/", "visibility": "everyone"}, "visibility"),
        ({"url": "https://a.example.com/", "mode": "grpc"}, "mode"),
    ],
)
def test_bad_input_is_a_400_per_field_and_writes_nothing(
    org: Any, alice: Any, client_for: Any, payload: dict[str, Any], field: str
) -> None:
    response = client_for(alice).post("/api/v1/agents", payload, format="json")
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid" and field in response.data["error"]["details"]
    assert not Agent.objects.for_org(org).exists()


def test_ssrf_blocked_is_a_400_naming_the_rule(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    for url, rule in [
        ("http://169.254.169.254/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://127.0.0.1:9/", "loopback"),
    ]:
        response = client_for(alice).post("/api/v1/agents", {"url": url}, format="json")
        assert response.status_code == 400
        error = response.data["error"]
        assert error["code"] == "ssrf_blocked" and error["details"]["rule"] == rule
        assert "Refusing" in error["message"]
    assert not Agent.objects.for_org(org).exists()


def test_unreachable_and_invalid_cards_are_400s_with_the_reason(
    card_server: CardServer, org: Any, alice: Any, client_for: Any, free_port: int
) -> None:
    client = client_for(alice)
    response = client.post("/api/v1/agents", {"url": f"http://127.0.0.1:{free_port}/"}, format="json")
    assert response.status_code == 400 and response.data["error"]["code"] == "card_unreachable"
    response = client.post("/api/v1/agents", {"url": card_server.base}, format="json")
    assert response.status_code == 400 and response.data["error"]["code"] == "card_not_found"
    card_server.serve("/.well-known/agent-card.json", {"description": "no name"})
    response = client.post("/api/v1/agents", {"url": card_server.base}, format="json")
    assert response.status_code == 400 and response.data["error"]["code"] == "card_invalid"
    assert "no name" in response.data["error"]["message"]
    assert not Agent.objects.for_org(org).exists()


def test_duplicate_slug_is_a_409(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    _manual(org, "Taken", slug="taken")
    payload = {"mode": "manual", "url": "https://b.example.com/", "name": "Other", "slug": "taken"}
    response = client_for(alice).post("/api/v1/agents", payload, format="json")
    assert response.status_code == 409 and response.data["error"]["code"] == "slug_taken"


def test_the_slug_of_a_retired_agent_is_refused_saying_why(
    no_allowlist: None, org: Any, alice: Any, client_for: Any
) -> None:
    """The list shows no agent with that slug, so "already has an agent with the slug" sent people looking."""
    from apps.tasks import actions as task_actions

    client = client_for(alice)
    gone = _manual(org, "Gone", slug="gone")
    task_actions.create_task(org=org, agent=gone, message={"role": "user", "parts": [{"kind": "text", "text": "hi"}]})
    assert client.delete(f"/api/v1/agents/{gone.pk}").status_code == 204  # it ran a task: retired
    assert "gone" not in {a["slug"] for a in client.get("/api/v1/agents").json()["results"]}
    payload = {"mode": "manual", "url": "https://b.example.com/", "name": "Again", "slug": "gone"}
    response = client.post("/api/v1/agents", payload, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "slug_taken",
        "message": "The slug 'gone' belonged to an agent that was deleted; retired slugs stay reserved so old tasks "
        "keep their agent — choose another.",
        "details": {"slug": ["Reserved by a deleted agent."]},
    }
    # Renaming another agent to it says the same; a live agent's slug still says it is in use.
    other = _manual(org, "Other", slug="other")
    renamed = client.patch(f"/api/v1/agents/{other.pk}", {"slug": "gone"}, format="json")
    assert renamed.status_code == 409 and "belonged to an agent that was deleted" in renamed.json()["error"]["message"]
    payload["slug"] = "other"
    live = client.post("/api/v1/agents", payload, format="json").json()["error"]
    assert live["message"] == "This organization already has an agent with the slug 'other'."
    assert not Agent.objects.for_org(org).filter(name="Again").exists()


def test_idempotent_registration(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    payload = {"mode": "manual", "url": "https://i.example.com/", "name": "Once"}
    first = client.post("/api/v1/agents", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/v1/agents", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201 and first.data["id"] == again.data["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Agent.objects.for_org(org).count() == 1


def test_list_is_the_orgs_own_agents(
    no_allowlist: None, org: Any, other_org: Any, alice: Any, client_for: Any, django_assert_num_queries: Any
) -> None:
    mine = [_manual(org, f"Mine{i}", by=alice) for i in range(3)]
    _manual(other_org, "Theirs", visibility=Visibility.PUBLIC)
    client = client_for(alice)
    client.get("/api/v1/agents")  # warm the session/membership caches the query count should not depend on
    response = client.get("/api/v1/agents")
    assert response.status_code == 200
    assert [a["id"] for a in response.data["results"]] == [str(a.pk) for a in reversed(mine)]
    _manual(org, "Mine3")
    # session, user, memberships (the org and role), then one page of agents with organization and creator joined
    with django_assert_num_queries(4):
        assert len(client.get("/api/v1/agents").data["results"]) == 4


def _list_queries(client: Any) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        client.get("/api/v1/agents")
    return len(ctx.captured_queries)


def test_list_query_count_does_not_grow_with_agents(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    _manual(org, "First", by=alice)
    baseline = _list_queries(client)
    for i in range(5):
        _manual(org, f"More{i}", by=alice)
    assert _list_queries(client) == baseline


def test_other_orgs_agents_resolve_as_404(
    no_allowlist: None, org: Any, other_org: Any, alice: Any, charlie: Any, client_for: Any
) -> None:
    secret = _manual(other_org, "Secret")
    shared = _manual(other_org, "Shared", visibility=Visibility.PUBLIC)
    client = client_for(alice)
    assert client.get(f"/api/v1/agents/{secret.pk}").status_code == 404
    assert client.get("/api/v1/agents/not-a-uuid").status_code == 404
    # A public agent of another org can be read (and used for tasks) ...
    response = client.get(f"/api/v1/agents/{shared.pk}")
    assert response.status_code == 200 and response.data["owned"] is False
    # ... but never changed.
    for agent in (secret, shared):
        assert client.patch(f"/api/v1/agents/{agent.pk}", {"name": "x"}, format="json").status_code == 404
        assert client.delete(f"/api/v1/agents/{agent.pk}").status_code == 404
        assert client.post(f"/api/v1/agents/{agent.pk}/refresh").status_code == 404
    assert Agent.objects.for_org(other_org).count() == 2
    assert client_for(charlie).get(f"/api/v1/agents/{secret.pk}").status_code == 200


def test_update_and_delete(no_allowlist: None, org: Any, dave: Any, client_for: Any) -> None:
    agent = _manual(org, "Editable")
    client = client_for(dave)
    response = client.patch(
        f"/api/v1/agents/{agent.pk}", {"visibility": "public", "description": "now public"}, format="json"
    )
    assert response.status_code == 200 and response.data["visibility"] == "public"
    assert client.patch(f"/api/v1/agents/{agent.pk}", {}, format="json").status_code == 400
    # The marketplace lists every public agent's description: 100,000 characters were taken.
    response = client.patch(f"/api/v1/agents/{agent.pk}", {"description": "d" * 4001}, format="json")
    assert response.status_code == 400 and "4000" in response.data["error"]["details"]["description"][0]
    response = client.patch(f"/api/v1/agents/{agent.pk}", {"url": "http://10.1.1.1/"}, format="json")
    assert response.status_code == 400 and response.data["error"]["details"]["rule"] == "private"
    assert client.delete(f"/api/v1/agents/{agent.pk}").status_code == 204
    assert not Agent.objects.for_org(org).exists()


@pytest.mark.parametrize("value", ["yes", "on", "true", "1", 1, 0, None, [True]])
def test_streaming_is_a_json_boolean_not_a_word_for_one(
    no_allowlist: None, org: Any, alice: Any, client_for: Any, value: Any
) -> None:
    # DRF's BooleanField took "yes", "on", "1" and 1 for true: a PATCH of {"streaming": "yes"} turned it on.
    agent = _manual(org, "Strict")
    client = client_for(alice)
    response = client.patch(f"/api/v1/agents/{agent.pk}", {"streaming": value}, format="json")
    assert response.status_code == 400, value
    reason = "This field may not be null." if value is None else "Must be true or false (a JSON boolean)."
    assert response.data["error"]["details"] == {"streaming": [reason]}
    agent.refresh_from_db()
    assert not agent.streaming
    manual = {"mode": "manual", "url": "https://strict.example.com/rpc", "name": "Strict Two", "streaming": value}
    response = client.post("/api/v1/agents", manual, format="json")
    assert response.status_code == 400 and response.data["error"]["details"] == {"streaming": [reason]}
    assert client.patch(f"/api/v1/agents/{agent.pk}", {"streaming": True}, format="json").data["streaming"] is True
    assert client.patch(f"/api/v1/agents/{agent.pk}", {"streaming": False}, format="json").data["streaming"] is False


def test_refresh_through_the_api(card_server: CardServer, org: Any, alice: Any, client_for: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    agent = actions.register_agent_by_url(org=org, url=card_server.base)
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base, version="9.9"))
    client = client_for(alice)
    response = client.post(f"/api/v1/agents/{agent.pk}/refresh")
    assert response.status_code == 200 and response.data["version"] == "9.9"
    card_server.serve("/.well-known/agent-card.json", b"{broken", status=200)
    response = client.post(f"/api/v1/agents/{agent.pk}/refresh")
    assert response.status_code == 400 and response.data["error"]["code"] == "card_invalid"
    manual = _manual(org, "Cardless")
    response = client.post(f"/api/v1/agents/{manual.pk}/refresh")
    assert response.status_code == 400 and response.data["error"]["code"] == "no_card"


def test_members_read_but_do_not_write(no_allowlist: None, org: Any, mia: Any, client_for: Any) -> None:
    agent = _manual(org, "Readable")
    client = client_for(mia)
    assert client.get("/api/v1/agents").status_code == 200
    assert client.get(f"/api/v1/agents/{agent.pk}").status_code == 200
    response = client.post("/api/v1/agents", {"url": "https://x.example.com/"}, format="json")
    assert response.status_code == 403 and response.data["error"]["code"] == "role_forbidden"
    assert client.patch(f"/api/v1/agents/{agent.pk}", {"name": "n"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/agents/{agent.pk}").status_code == 403
    assert client.post("/api/v1/agents/assign-demo").status_code == 403


def test_key_scopes(no_allowlist: None, org: Any, alice: Any) -> None:
    agent = _manual(org, "Scoped")
    _, read_only = issue_api_key(alice, org, scopes=["agents:read"])
    client = key_client(read_only)
    assert client.get(f"/api/v1/agents/{agent.pk}").status_code == 200
    assert client.get("/api/v1/marketplace").status_code == 200
    response = client.post("/api/v1/agents/assign-demo")
    assert response.status_code == 403 and response.data["error"]["details"] == {"required_scope": "agents:write"}
    _, tasks_only = issue_api_key(alice, org, scopes=["tasks:read"])
    response = key_client(tasks_only).get("/api/v1/agents")
    assert response.status_code == 403 and response.data["error"]["details"] == {"required_scope": "agents:read"}
    _, writer = issue_api_key(alice, org, scopes=["agents:read", "agents:write"])
    response = key_client(writer).patch(f"/api/v1/agents/{agent.pk}", {"name": "Renamed"}, format="json")
    assert response.status_code == 200
    assert AuditEvent.objects.filter(action="agent.updated", api_key_id__isnull=False).count() == 1


def test_anonymous_is_401(api: Any) -> None:
    assert api.get("/api/v1/agents").status_code == 401
    assert api.get("/api/v1/marketplace").status_code == 401


def test_assign_demo_is_idempotent(settings: Any, org: Any, bob: Any, client_for: Any) -> None:
    client = client_for(bob)
    first = client.post("/api/v1/agents/assign-demo")
    assert first.status_code == 201 and len(first.data["created"]) == 6 and first.data["existing"] == []
    again = client.post("/api/v1/agents/assign-demo")
    assert again.status_code == 200 and again.data["created"] == [] and len(again.data["existing"]) == 6
    slugs = sorted(a["slug"] for a in client.get("/api/v1/agents").data["results"])
    assert slugs == ["demo-calculator", "demo-echo", "demo-flaky", "demo-greeter", "demo-slow", "demo-summarizer"]
    echo = next(a for a in first.data["created"] if a["slug"] == "demo-echo")
    assert echo["url"] == f"{settings.HERMES_PUBLIC_URL}/demo-agents/echo/" and echo["is_demo"]


def test_marketplace_lists_and_searches_public_agents(
    no_allowlist: None, org: Any, other_org: Any, alice: Any, client_for: Any
) -> None:
    _manual(other_org, "Secret")
    translator = _manual(
        other_org,
        "Translator",
        visibility=Visibility.PUBLIC,
        skills=[{"id": "tr", "name": "Translate", "tags": ["language"]}],
    )
    mine = _manual(org, "MyPublic", visibility=Visibility.PUBLIC)
    client = client_for(alice)
    response = client.get("/api/v1/marketplace")
    assert response.status_code == 200
    assert [a["id"] for a in response.data["results"]] == [str(mine.pk), str(translator.pk)]
    assert response.data["results"][1]["organization"] == "globex" and "url" not in response.data["results"][1]
    assert [a["name"] for a in client.get("/api/v1/marketplace", {"q": "language"}).data["results"]] == ["Translator"]
    assert client.get("/api/v1/marketplace", {"q": "secret"}).data["results"] == []
    # Only values are searched: `tags` was a key of every skill's JSON, and listed every agent that had a skill.
    for key in ("tags", "id", "description"):
        assert client.get("/api/v1/marketplace", {"q": key}).data["results"] == [], key
    # The console's marketplace searches through the same selector.
    console = client.get("/marketplace/", {"q": "tags"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Translator" not in console and "No public agent matches" in console
    assert "Translator" in client.get("/marketplace/", {"q": "language"}, HTTP_HX_REQUEST="true").content.decode()
    # Reading another org's public agent by id gives its listing, not its endpoint, card, errors or creator.
    detail = client.get(f"/api/v1/agents/{translator.pk}").json()
    assert detail == {**response.json()["results"][1], "owned": False}
    assert client.get(f"/api/v1/agents/{mine.pk}").json()["url"] == "https://mypublic.example.com/"


def test_credentials_in_an_agent_url_are_refused(no_allowlist: None, org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    for body in (
        {"url": "https://user:secret@agent.example.com/"},
        {"mode": "manual", "name": "Basic", "url": "https://user:secret@agent.example.com/rpc"},
    ):
        response = client.post("/api/v1/agents", body, content_type="application/json")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["details"] == {"rule": "credentials"}
        assert "Leave credentials out of the agent's URL" in response.json()["error"]["message"]
    assert not Agent.objects.for_org(org).exists()


def test_marketplace_can_be_switched_off(settings: Any, org: Any, alice: Any, client_for: Any) -> None:
    settings.HERMES_FEATURES = {**settings.HERMES_FEATURES, "marketplace": False}
    assert client_for(alice).get("/api/v1/marketplace").status_code == 404


def test_schema_documents_the_agent_endpoints(org: Any, alice: Any, client_for: Any) -> None:
    response = client_for(alice).get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    text = response.content.decode()
    for path in ("/api/v1/agents", "/api/v1/agents/assign-demo", "/api/v1/agents/{id}/refresh", "/api/v1/marketplace"):
        assert path in text
    assert "agents:write" in text


def test_the_assign_demo_description_names_every_demo_agent(org: Any, alice: Any, client_for: Any) -> None:
    """It listed five of the six (not the greeter): whatever DEMO_AGENTS holds, the description must name."""
    from apps.agents.demo.specs import DEMO_AGENTS

    schema = client_for(alice).get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    description = schema["paths"]["/api/v1/agents/assign-demo"]["post"]["description"].lower()
    assert [spec.slug for spec in DEMO_AGENTS if spec.slug not in description] == []


def test_deleting_an_agent_that_ran_tasks_retires_it(
    no_allowlist: None, org: Any, other_org: Any, dave: Any, charlie: Any, client_for: Any
) -> None:
    """Tasks keep their agent, and no org can delete tasks: deleting such an agent was a 409 forever (also when
    only other orgs had used it while it was public). It is retired instead: gone for everyone, history intact."""
    from apps.core.models import AuditEvent
    from apps.tasks import actions as task_actions

    owner, other = client_for(dave), client_for(charlie)
    agent = actions.register_agent_manually(
        org=org, name="Shared", url="https://shared.example.com/", visibility="public"
    )
    theirs = task_actions.create_task(
        org=other_org, agent=agent, message={"role": "user", "parts": [{"kind": "text", "text": "hi"}]}
    )
    assert owner.delete(f"/api/v1/agents/{agent.pk}").status_code == 204
    assert owner.get(f"/api/v1/agents/{agent.pk}").status_code == 404
    assert str(agent.pk) not in {a["id"] for a in owner.get("/api/v1/agents").json()["results"]}
    assert str(agent.pk) not in {a["id"] for a in other.get("/api/v1/marketplace").json()["results"]}
    refused = other.post("/api/v1/tasks", {"agent": str(agent.pk), "input": {"parts": [{"text": "x"}]}}, format="json")
    assert refused.status_code == 404
    # The other org's task still shows what ran it.
    assert other.get(f"/api/v1/tasks/{theirs.pk}").json()["agent"] == {"id": str(agent.pk), "name": "Shared"}
    assert Agent.with_retired.for_org(org).get(pk=agent.pk).visibility == "private"
    assert AuditEvent.objects.filter(target_id=str(agent.pk), action="agent.retired").exists()
    # Its slug stays taken (tasks name it); a new agent of the same name gets the next one.
    again = actions.register_agent_manually(org=org, name="Shared", url="https://shared.example.com/")
    assert again.slug == "shared-2"
    unused = actions.register_agent_manually(org=org, name="Unused", url="https://unused.example.com/")
    assert owner.delete(f"/api/v1/agents/{unused.pk}").status_code == 204
    assert not Agent.with_retired.for_org(org).filter(pk=unused.pk).exists()  # no tasks: really deleted


@pytest.mark.parametrize("slug", ["My_Echo", "Bad Slug", "two--hyphens", "-edge"])
def test_a_refused_slug_states_the_rule_on_every_surface(
    no_allowlist: None, org: Any, alice: Any, client_for: Any, slug: str
) -> None:
    # The API's SlugField invited capitals ("letters, numbers, underscores or hyphens") and the action then said
    # "lowercase letters, digits and hyphens", though underscores are allowed.
    rule = "is not a slug: use lowercase letters, digits, underscores and single hyphens"
    client = client_for(alice)
    payload = {"mode": "manual", "url": "https://s.example.com/", "name": "S", "slug": slug}
    refused = client.post("/api/v1/agents", payload, format="json")
    assert refused.status_code == 400 and rule in refused.data["error"]["details"]["slug"][0]
    agent = _manual(org, "Kept", slug="kept_1")  # an underscore is within the rule
    patched = client.patch(f"/api/v1/agents/{agent.pk}", {"slug": slug}, format="json")
    assert patched.status_code == 400 and rule in patched.data["error"]["details"]["slug"][0]
    with pytest.raises(actions.AgentActionError, match=rule):
        actions.update_agent(agent, slug=slug)
    agent.refresh_from_db()
    assert agent.slug == "kept_1"


@pytest.mark.parametrize("url", ["http://summarizer:8080/", "http://summarizer/rpc", "https://agents.svc:443/a"])
def test_a_service_name_is_a_host(
    no_allowlist: None, org: Any, alice: Any, client_for: Any, url: str, settings: Any
) -> None:
    # Compose and Kubernetes services are reached by a name without a dot, which Django's URLValidator refused
    # ("Enter a valid URL.") though a card's interface URL and a peer's base URL may use one.
    settings.HERMES_SSRF_ALLOWLIST = ["summarizer", "agents.svc"]
    payload = {"mode": "manual", "url": url, "name": "Svc"}
    created = client_for(alice).post("/api/v1/agents", payload, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["url"] == url


@pytest.mark.parametrize("url", ["ftp://agent.example.com/", "http:///nohost", "http://a b/", "agent.example.com"])
def test_what_is_no_agent_url_is_a_400_on_url(
    no_allowlist: None, org: Any, alice: Any, client_for: Any, url: str
) -> None:
    payload = {"mode": "manual", "url": url, "name": "Bad"}
    refused = client_for(alice).post("/api/v1/agents", payload, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["url"] == [
        "Enter the agent's URL: http:// or https://, a host, an optional port and path."
    ]
