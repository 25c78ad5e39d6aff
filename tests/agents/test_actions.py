from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.http import Http404
from django.utils import timezone

from apps.agents import actions, selectors
from apps.agents.models import Agent, Visibility
from apps.core import audit
from apps.core.models import AuditEvent
from tests.agents.conftest import CardServer, v03_card, v1_card

pytestmark = pytest.mark.django_db


def test_register_by_url_reads_the_v1_card(card_server: CardServer, org: Any, alice: Any) -> None:
    card_server.serve("/agent/.well-known/agent-card.json", v1_card(card_server.base))
    agent = actions.register_agent_by_url(org=org, url=f"{card_server.base}/agent/", by=alice)
    agent.refresh_from_db()
    assert agent.name == "Weather Bot"
    assert agent.slug == "weather-bot"
    assert agent.version == "2.1.0"
    assert agent.url == f"{card_server.base}/rpc"
    assert agent.card_url == f"{card_server.base}/agent/.well-known/agent-card.json"
    assert agent.protocol_version == "1.0"
    assert agent.streaming is True and agent.push_notifications is False
    assert agent.skills[0]["id"] == "forecast" and agent.skill_names == ["Forecast"]
    assert agent.card["name"] == "Weather Bot"
    assert agent.created_by == alice and agent.visibility == Visibility.PRIVATE
    assert agent.is_online


def test_falls_back_to_agent_json_and_accepts_v03_cards(card_server: CardServer, org: Any) -> None:
    card_server.serve("/.well-known/agent.json", v03_card(card_server.base))
    agent = actions.register_agent_by_url(org=org, url=card_server.base)
    assert card_server.hits == ["/.well-known/agent-card.json", "/.well-known/agent.json"]
    assert agent.name == "Legacy Bot"
    assert agent.protocol_version == "0.3.0"
    assert agent.url == f"{card_server.base}/legacy"
    assert agent.streaming is False


def test_a_url_naming_the_card_file_is_fetched_directly(card_server: CardServer, org: Any) -> None:
    card = v1_card(card_server.base)
    card["supportedInterfaces"][0]["url"] = "/relative-rpc"
    card_server.serve("/cards/bot.json", card)
    agent = actions.register_agent_by_url(org=org, url=f"{card_server.base}/cards/bot.json")
    assert card_server.hits == ["/cards/bot.json"]
    assert agent.url == f"{card_server.base}/relative-rpc"  # resolved against the card's URL


@pytest.mark.parametrize(
    ("card", "field", "problem"),
    [
        # The SDK's parser named no field here ("Failed to parse name field: expected string or bytes-like
        # object, got 'int'.."), at any depth.
        ({"name": 123}, "name", "must be a string, not a number"),
        ({"name": "v", "version": 5}, "version", "must be a string, not a number"),
        (
            {"name": "c", "capabilities": {"streaming": "yes"}},
            "capabilities.streaming",
            "must be a boolean, not a string",
        ),
        ({"name": "s", "skills": [{"id": "a", "name": 5}]}, "skills[0].name", "must be a string, not a number"),
        (
            {"name": "i", "supportedInterfaces": [{"url": 5, "protocolBinding": "JSONRPC"}]},
            "supportedInterfaces[0].url",
            "must be a string, not a number",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_named_by_its_path(
    card_server: CardServer, org: Any, card: dict[str, Any], field: str, problem: str
) -> None:
    card_server.serve("/.well-known/agent-card.json", json.dumps(card).encode())
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base)
    assert exc_info.value.details == {"field": field}
    assert str(exc_info.value) == f"The agent card does not match the A2A AgentCard schema: `{field}` {problem}."


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"{not json", "card_invalid", "not valid JSON"),
        (b"[1, 2]", "card_invalid", "not a JSON object"),
        (b'{"name": "x", "capabilities": {"streaming": "very"}}', "card_invalid", "schema"),
        (b'{"description": "nameless"}', "card_invalid", "no name"),
        ('{"name": "Pay\u202eexe.bat"}'.encode(), "card_invalid", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        # The SDK's parser answered these with its own internals ("'str' object has no attribute 'pop'").
        (b'{"name": "s", "skills": "nope"}', "card_invalid", "`skills` must be a list, not a string"),
        (b'{"name": "s", "skills": ["nope"]}', "card_invalid", "`skills[0]` must be an object, not a string."),
        (b'{"name": "s", "capabilities": []}', "card_invalid", "`capabilities` must be an object, not a list"),
        # Refused rather than cut short without a word.
        (
            json.dumps({"name": "n" * 201}).encode(),
            "card_invalid",
            "name is 201 characters long; Hermes keeps at most 200",
        ),
        (
            json.dumps({"name": "d", "description": "d" * 4001}).encode(),
            "card_invalid",
            "description is 4001 characters",
        ),
        (  # the interface URL comes from the card, not the caller: it was stored with the password in it
            b'{"name": "c", "supportedInterfaces": [{"url": "http://bob:s3cret@a/", "protocolBinding": "JSONRPC"}]}',
            "card_invalid",
            "carries credentials",
        ),
        (
            b'{"name": "g", "supportedInterfaces": [{"url": "http://a/", "protocolBinding": "GRPC"}]}',
            "card_invalid",
            "no JSON-RPC interface",
        ),
    ],
)
def test_invalid_cards_are_refused_with_the_reason(
    card_server: CardServer, org: Any, body: bytes, code: str, fragment: str
) -> None:
    card_server.serve("/.well-known/agent-card.json", body)
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base)
    assert exc_info.value.code == code
    assert fragment in str(exc_info.value)
    assert not Agent.objects.for_org(org).exists()


def test_missing_card_names_both_paths(card_server: CardServer, org: Any) -> None:
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base)
    assert exc_info.value.code == "card_not_found"
    assert "agent-card.json" in str(exc_info.value) and "agent.json" in str(exc_info.value)


def test_server_error_is_unreachable(card_server: CardServer, org: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", b"oops", status=500)
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base)
    assert exc_info.value.code == "card_unreachable"


def test_closed_port_is_unreachable(settings: Any, org: Any, free_port: int) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=f"http://127.0.0.1:{free_port}/")
    assert exc_info.value.code == "card_unreachable"


def test_ssrf_blocked_registration_names_the_rule(settings: Any, org: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url="http://10.0.0.1/")
    assert exc_info.value.code == "ssrf_blocked"
    assert exc_info.value.details["rule"] == "private"


def test_card_pointing_at_a_metadata_host_is_refused(card_server: CardServer, org: Any) -> None:
    # Interface addresses are checked again whenever they are dialled; metadata names are refused up front.
    interface = {"url": "http://metadata.google.internal/x", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base, supportedInterfaces=[interface]))
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base)
    assert exc_info.value.code == "card_invalid"
    assert not Agent.objects.for_org(org).exists()


def test_slugs_are_unique_per_org(card_server: CardServer, org: Any, other_org: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    first = actions.register_agent_by_url(org=org, url=card_server.base)
    second = actions.register_agent_by_url(org=org, url=card_server.base)
    elsewhere = actions.register_agent_by_url(org=other_org, url=card_server.base)
    assert (first.slug, second.slug, elsewhere.slug) == ("weather-bot", "weather-bot-2", "weather-bot")
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_by_url(org=org, url=card_server.base, slug="weather-bot")
    assert exc_info.value.code == "slug_taken" and exc_info.value.status == 409
    with pytest.raises(actions.AgentActionError):
        actions.register_agent_by_url(org=org, url=card_server.base, slug="Not A Slug")


def test_manual_registration(settings: Any, org: Any, alice: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    agent = actions.register_agent_manually(
        org=org, name="Hand Made", url="https://agents.example.com/rpc", by=alice, streaming=True
    )
    assert agent.slug == "hand-made" and agent.streaming and agent.card == {} and agent.card_url == ""
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.refresh_agent_card(agent)
    assert exc_info.value.code == "no_card"
    with pytest.raises(actions.AgentActionError) as exc_info:
        actions.register_agent_manually(org=org, name="Bad", url="gopher://x/")
    assert exc_info.value.details["rule"] == "scheme"


def test_refresh_updates_and_records_failures(card_server: CardServer, org: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    agent = actions.register_agent_by_url(org=org, url=card_server.base)
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base, version="3.0", name="Renamed"))
    refreshed = actions.refresh_agent_card(agent)
    assert refreshed.version == "3.0" and refreshed.name == "Renamed"
    assert refreshed.slug == "weather-bot"  # the slug is the org's name for it; a card rename keeps it
    card_server.serve("/.well-known/agent-card.json", b"gone", status=503)
    with pytest.raises(actions.AgentActionError):
        actions.refresh_agent_card(refreshed)
    refreshed.refresh_from_db()
    assert "HTTP 503" in refreshed.last_error
    assert not refreshed.is_online


def test_update_visibility_and_delete(settings: Any, org: Any, alice: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    agent = actions.register_agent_manually(org=org, name="A", url="https://a.example.com/")
    other = actions.register_agent_manually(org=org, name="B", url="https://b.example.com/")
    agent = actions.update_agent(agent, by=alice, description="new", streaming=True, slug="renamed")
    assert (agent.description, agent.streaming, agent.slug) == ("new", True, "renamed")
    with pytest.raises(actions.AgentActionError):
        actions.update_agent(agent, slug=other.slug)
    with pytest.raises(actions.AgentActionError):
        actions.update_agent(agent, organization=None)
    with pytest.raises(actions.AgentActionError):
        actions.set_visibility(agent, "everyone")
    agent = actions.set_visibility(agent, Visibility.PUBLIC, by=alice)
    assert agent.visibility == Visibility.PUBLIC
    agent_id = str(agent.pk)
    actions.delete_agent(agent, by=alice)
    assert list(Agent.objects.for_org(org)) == [other]
    trail = list(AuditEvent.objects.filter(org_id=org.pk, target_id=agent_id).order_by("pk"))
    assert [e.action for e in trail] == [
        "agent.registered",
        "agent.updated",
        "agent.updated",
        "agent.deleted",
    ]
    assert trail[1].actor == alice and trail[1].details["fields"] == ["description", "slug", "streaming"]
    assert trail[2].details["fields"] == ["visibility"]
    # What it was and became (the trail could not tell opening the agent to every org from closing it again).
    assert trail[2].details["changes"] == {"visibility": ["private", "public"]}
    assert "description" not in trail[1].details["changes"]  # named in `fields`; a long text is not copied


def test_card_agents_keep_what_their_card_says(card_server: CardServer, org: Any) -> None:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    agent = actions.register_agent_by_url(org=org, url=card_server.base)
    # Refused rather than accepted and silently undone by the next refresh, which rewrites them from the card.
    with pytest.raises(actions.AgentActionError) as refused:
        actions.update_agent(agent, url="https://elsewhere.example.com/", name="Mine", streaming=False, slug="mine")
    assert refused.value.details == {field: ["Set by the agent card."] for field in ("name", "streaming", "url")}
    assert "change the card and refresh it" in str(refused.value)
    agent.refresh_from_db()
    assert agent.slug != "mine"  # nothing of a refused edit is applied
    for field, value in (("description", "mine"), ("version", "9")):
        with pytest.raises(actions.AgentActionError):
            actions.update_agent(agent, **{field: value})
    # What is the org's own stays editable, and a refresh keeps it.
    agent = actions.update_agent(agent, slug="mine", visibility="public")
    agent = actions.refresh_agent_card(agent)
    assert (agent.slug, agent.visibility) == ("mine", "public")


def test_usable_agents_are_own_plus_public(settings: Any, org: Any, other_org: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    mine = actions.register_agent_manually(org=org, name="Mine", url="https://m.example.com/")
    theirs_private = actions.register_agent_manually(org=other_org, name="Secret", url="https://s.example.com/")
    theirs_public = actions.register_agent_manually(
        org=other_org,
        name="Shared",
        url="https://p.example.com/",
        visibility=Visibility.PUBLIC,
        skills=[{"id": "translate", "name": "Translate", "tags": ["language"]}],
    )
    assert set(selectors.usable_agents(org)) == {mine, theirs_public}
    assert selectors.get_usable_agent(org, theirs_public.pk) == theirs_public
    assert theirs_public.is_usable_by(org) and not theirs_private.is_usable_by(org)
    for missing in (theirs_private.pk, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(Http404):
            selectors.get_usable_agent(org, missing)
    # Editing is only for the owner org, even for a public agent.
    with pytest.raises(Http404):
        selectors.get_org_agent(org, theirs_public.pk)
    assert selectors.get_org_agent(org, str(mine.pk)) == mine
    assert list(selectors.marketplace_agents()) == [theirs_public]
    assert list(selectors.marketplace_agents("LANGUAGE")) == [theirs_public]
    assert list(selectors.marketplace_agents("shar")) == [theirs_public]
    assert list(selectors.marketplace_agents("nothing-like-this")) == []


def test_marketplace_search_matches_skill_values_not_json_keys(
    settings: Any, org: Any, other_org: Any, django_assert_num_queries: Any
) -> None:
    """`q` searched the skills' JSON text: `tags`, `id`, `description` … matched every agent that had a skill."""
    settings.HERMES_SSRF_ALLOWLIST = []

    def public(name: str, skills: list[Any], description: str = "") -> Agent:
        return actions.register_agent_manually(
            org=other_org,
            name=name,
            url=f"https://{name.lower()}.example.com/",
            description=description,
            visibility=Visibility.PUBLIC,
            skills=skills,
        )

    translator = public(
        "Translator",
        [
            {
                "id": "tr-skill",
                "name": "Translate",
                "description": "Between natural languages",
                "tags": ["language", "Übersetzung"],
                "examples": ["Say hello in French"],
            }
        ],
    )
    reader = public("Reader", [{"id": "ocr", "name": "Read scans", "tags": ["vision"]}], description="Reads images")
    public("Plain", [])
    # Whatever a card said: not an array of objects, tags that are no list. Nothing of it matches, nothing breaks.
    odd = public("Odd", [])
    odd.skills = {"name": "hidden-object"}
    odd.save()
    public("Odder", ["hidden-string", {"name": None, "tags": "hidden-tag"}, {"tags": [{"name": "hidden-nested"}]}])

    def found(q: str) -> set[str]:
        return {agent.name for agent in selectors.marketplace_agents(q)}

    for key in ("tags", "id", "name", "description", "examples", '"', ":", "hidden"):
        assert found(key) == set(), key
    assert found("language") == found("LANGUAGE") == {"Translator"}  # a tag, case-insensitively
    assert found("Übersetzung") == {"Translator"}  # decoded, not the JSON text's \u00dc escape (SQLite)
    assert found("natural") == {"Translator"}  # a skill's description
    assert found("read scans") == {"Reader"}  # a skill's name
    assert found("images") == {"Reader"}  # the agent's description
    assert found("vision") == {"Reader"}
    assert found("tr-skill") == found("hello") == set()  # skill ids and examples are not what people search
    assert found("a") >= {"Translator", "Reader", "Plain"}
    with django_assert_num_queries(1):
        assert list(selectors.marketplace_agents("language")) == [translator]
    assert reader in selectors.marketplace_agents("Vision")
    # Rows from before the column are filled by its migration, with the same text save() keeps.
    import importlib

    from django.apps import apps as registry

    Agent.objects.for_org(other_org).update(skills_text="")
    importlib.import_module("apps.agents.migrations.0004_agent_skills_text").fill_skills_text(registry, None)
    assert found("language") == {"Translator"} and found("tags") == set()


def test_a_registration_that_loses_its_chosen_slug_to_a_concurrent_one_takes_the_next(
    settings: Any, org: Any, monkeypatch: Any
) -> None:
    # Both chose "bot" before either saved; the second used to be a 409 slug_taken for a slug it never sent.
    settings.HERMES_SSRF_ALLOWLIST = []
    actions.register_agent_manually(org=org, name="Bot", url="https://a.example.com/")
    choose = actions._unique_slug
    chosen = iter(["bot"])  # what it saw free, before the other registration's row existed
    monkeypatch.setattr(actions, "_unique_slug", lambda *a, **k: next(chosen, None) or choose(*a, **k))
    second = actions.register_agent_manually(org=org, name="Bot", url="https://b.example.com/")
    assert second.slug == "bot-2"
    # A slug the caller asked for is still theirs to change: taken is a 409.
    with pytest.raises(actions.AgentActionError) as taken:
        actions.register_agent_manually(org=org, name="Bot", url="https://c.example.com/", slug="bot")
    assert taken.value.code == "slug_taken"


def test_contact_recording_is_throttled(settings: Any, org: Any, django_assert_num_queries: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    agent = actions.register_agent_manually(org=org, name="A", url="https://a.example.com/")
    assert not agent.is_online
    actions.record_agent_contact(agent)
    assert agent.is_online
    with django_assert_num_queries(0):
        actions.record_agent_contact(agent)
    actions.record_agent_contact(agent, error="connection refused")
    agent.refresh_from_db()
    assert agent.last_error == "connection refused" and not agent.is_online
    actions.record_agent_contact(agent)
    agent.refresh_from_db()
    assert agent.is_online and agent.last_error == ""
    Agent.objects.for_org(org).update(last_seen_at=timezone.now() - timedelta(hours=1))
    agent.refresh_from_db()
    assert not agent.is_online


def test_assigning_demo_agents_brings_a_retired_one_back(org: Any, alice: Any) -> None:
    from apps.tasks import actions as task_actions

    echo = next(a for a in actions.assign_demo_agents(org=org).created if a.demo_key == "echo")
    task_actions.create_task(org=org, agent=echo, message={"role": "user", "parts": [{"kind": "text", "text": "hi"}]})
    assert actions.delete_agent(echo, by=alice) is False  # it ran a task: retired, not removed
    assert not Agent.objects.for_org(org).filter(pk=echo.pk).exists()
    again = actions.assign_demo_agents(org=org, by=alice)
    assert echo.pk in {a.pk for a in again.existing} and Agent.objects.for_org(org).filter(pk=echo.pk).exists()
    # Said, and audited: it is a change to the org (the console said "nothing changed").
    assert [a.pk for a in again.restored] == [echo.pk]
    assert audit.events_for_org(org).filter(action="agent.restored", target_id=str(echo.pk)).count() == 1
    assert actions.assign_demo_agents(org=org).restored == []
