"""Agent console pages: list, register with a card preview, detail, refresh, visibility, delete, marketplace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.agents import actions
from apps.agents.models import Agent
from tests.agents.conftest import CardServer, v1_card
from tests.console.conftest import HX, main_html

pytestmark = pytest.mark.django_db


@pytest.fixture
def cards(card_server: CardServer) -> Iterator[CardServer]:
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base))
    yield card_server


def manual_agent(org: Any, name: str = "Echo", **kwargs: Any) -> Agent:
    return actions.register_agent_manually(org=org, name=name, url="https://agent.example.com/rpc", **kwargs)


@pytest.mark.parametrize(("who", "status"), [("alice", 200), ("bob", 200), ("dave", 200), ("mia", 403)])
def test_register_page_needs_agents_write(as_user: Any, request: Any, who: str, status: int) -> None:
    user = request.getfixturevalue(who)
    assert as_user(user).get("/agents/register/").status_code == status
    assert as_user(user).get("/agents/").status_code == 200


def test_preview_shows_the_card_and_stores_nothing(as_user: Any, dave: Any, org: Any, cards: CardServer) -> None:
    response = as_user(dave).post("/agents/register/preview/", {"url": cards.base}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="preview"')
    assert "Weather Bot" in html and "Forecast" in html and f"{cards.base}/rpc" in html
    assert "Register this agent" in html and f'value="{cards.base}"' in html
    assert not Agent.objects.for_org(org).exists()


def test_preview_explains_a_missing_card(as_user: Any, dave: Any, card_server: CardServer) -> None:
    response = as_user(dave).post("/agents/register/preview/", {"url": card_server.base}, **HX)
    assert response.status_code == 422
    html = response.content.decode()
    assert "No agent card found" in html and "agent-card.json" in html and "Register this agent" not in html
    # The error sits under step 1's URL field, swapped in out of band, marked invalid (the keyboard goes there).
    field = html[html.index('<div id="url-field" hx-swap-oob="true">') : html.index("Correct the agent's URL")]
    assert 'aria-invalid="true"' in field and "No agent card found" in field and 'name="url"' in field


def test_preview_refuses_private_addresses(as_user: Any, dave: Any, settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    response = as_user(dave).post("/agents/register/preview/", {"url": "http://169.254.169.254/"}, **HX)
    assert response.status_code == 422 and "169.254.169.254" in response.content.decode()


def test_preview_refuses_credentials_before_fetching(as_user: Any, dave: Any, cards: CardServer) -> None:
    url = cards.base.replace("http://", "http://user:s3cret@")
    response = as_user(dave).post("/agents/register/preview/", {"url": url}, **HX)
    html = response.content.decode()
    assert response.status_code == 422 and "Leave credentials out of the agent&#x27;s URL" in html
    assert cards.hits == []  # nothing was fetched with them (nor logged by the HTTP client)


def test_register_after_preview(as_user: Any, dave: Any, org: Any, cards: CardServer) -> None:
    response = as_user(dave).post("/agents/register/", {"url": cards.base, "slug": "", "visibility": "private"}, **HX)
    agent = Agent.objects.for_org(org).get()
    assert response.status_code == 204 and response["HX-Redirect"] == f"/agents/{agent.pk}/"
    assert agent.name == "Weather Bot" and agent.created_by == dave
    detail = main_html(as_user(dave).get(f"/agents/{agent.pk}/"))
    assert "Weather Bot" in detail and "Forecast" in detail and "Re-fetch the card" in detail
    # A second registration with the same slug explains the conflict in the form.
    again = as_user(dave).post(
        "/agents/register/", {"url": cards.base, "slug": agent.slug, "visibility": "private"}, **HX
    )
    assert again.status_code == 422 and "already has an agent" in again.content.decode()
    # Previewing the same endpoint again says which agent already uses it.
    preview = as_user(dave).post("/agents/register/preview/", {"url": cards.base}, **HX).content.decode()
    assert "already has 1 agent at this endpoint" in preview and f'href="/agents/{agent.pk}/"' in preview


def test_a_refused_slug_keeps_the_previewed_card(as_user: Any, dave: Any, org: Any, cards: CardServer) -> None:
    client = as_user(dave)
    assert "Weather Bot" in client.post("/agents/register/preview/", {"url": cards.base}, **HX).content.decode()
    # Step 2 with a bad slug: the answer replaces the preview, and it showed only the slug and visibility fields.
    refused = client.post("/agents/register/", {"url": cards.base, "slug": "Bad Slug", "visibility": "private"}, **HX)
    assert refused.status_code == 422
    html = refused.content.decode()
    assert html.lstrip().startswith('<section class="card" id="preview"')
    assert "&#x27;Bad Slug&#x27; is not a slug" in html and 'value="Bad Slug"' in html
    assert "Weather Bot" in html and "Forecasts" in html and f"{cards.base}/rpc" in html and "Forecast" in html
    assert "Register this agent" in html and f'name="url" value="{cards.base}"' in html
    assert not Agent.objects.for_org(org).exists()


SLUG_RULE = "is not a slug: use lowercase letters, digits, underscores and single hyphens, starting and ending with"


@pytest.mark.parametrize("slug", ["Bad Slug", "My_Echo", "bad slug", "echo--2", "-echo", "écho"])
def test_a_refused_agent_slug_states_the_rule_the_agent_is_held_to(
    as_user: Any, dave: Any, org: Any, cards: CardServer, slug: str
) -> None:
    # One message, the real rule: Django's "letters, numbers, underscores or hyphens" was followed by "A slug is
    # lowercase letters, digits and hyphens." for `My_Echo`, which its advice allowed.
    client = as_user(dave)
    by_card = client.post("/agents/register/", {"url": cards.base, "slug": slug, "visibility": "private"}, **HX)
    manual = client.post(
        "/agents/register/manual/",
        {
            "manual-name": "Legacy bot",
            "manual-url": "https://legacy.example.com/rpc",
            "manual-protocol_version": "1.0",
            "manual-slug": slug,
            "manual-visibility": "private",
        },
    )
    for refused in (by_card, manual):
        html = refused.content.decode()
        assert refused.status_code == 422 and SLUG_RULE in html
        assert "Enter a valid" not in html and "A slug is lowercase" not in html
    assert not Agent.objects.for_org(org).exists()


def test_an_agent_slug_the_rule_allows_is_taken_as_given(as_user: Any, dave: Any, org: Any) -> None:
    form = {
        "manual-name": "Legacy bot",
        "manual-url": "https://legacy.example.com/rpc",
        "manual-protocol_version": "1.0",
        "manual-slug": "my_echo-2",
        "manual-visibility": "private",
    }
    assert as_user(dave).post("/agents/register/manual/", form).status_code == 302
    assert Agent.objects.for_org(org).get().slug == "my_echo-2"


def test_member_cannot_register_or_preview(as_user: Any, mia: Any, org: Any, cards: CardServer) -> None:
    client = as_user(mia)
    assert client.post("/agents/register/preview/", {"url": cards.base}).status_code == 403
    assert client.post("/agents/register/", {"url": cards.base, "visibility": "private"}).status_code == 403
    assert not Agent.objects.for_org(org).exists()


def test_refresh_visibility_and_delete(as_user: Any, bob: Any, org: Any, cards: CardServer) -> None:
    agent = actions.register_agent_by_url(org=org, url=cards.base)
    client = as_user(bob)
    cards.serve("/.well-known/agent-card.json", v1_card(cards.base, name="Weather Bot 2"))
    refreshed = client.post(f"/agents/{agent.pk}/refresh/", **HX)
    assert refreshed.status_code == 200 and 'id="agent-state"' in refreshed.content.decode()
    agent.refresh_from_db()
    assert agent.name == "Weather Bot 2"
    assert client.post(f"/agents/{agent.pk}/visibility/", {"visibility": "public"}).status_code == 302
    agent.refresh_from_db()
    assert agent.visibility == "public"
    assert client.post(f"/agents/{agent.pk}/delete/").status_code == 302
    assert not Agent.objects.for_org(org).exists()


def test_a_failed_refresh_is_shown_not_raised(as_user: Any, bob: Any, org: Any, cards: CardServer) -> None:
    agent = actions.register_agent_by_url(org=org, url=cards.base)
    cards.serve("/.well-known/agent-card.json", b"{}", status=500)
    response = as_user(bob).post(f"/agents/{agent.pk}/refresh/", **HX)
    assert response.status_code == 200
    assert "Could not refresh the card" in response.content.decode() and "offline" in response.content.decode()


def test_charlie_gets_404_for_acme_agents(as_user: Any, charlie: Any, org: Any, settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    agent = manual_agent(org)
    client = as_user(charlie)
    for path in ("", "refresh/", "visibility/", "delete/"):
        method = client.get if not path else client.post
        assert method(f"/agents/{agent.pk}/{path}").status_code == 404, path
    assert client.get("/agents/not-a-uuid/").status_code == 404
    assert "Echo" not in main_html(client.get("/agents/"))


def test_public_agents_are_readable_but_not_editable_by_others(
    as_user: Any, charlie: Any, org: Any, settings: Any
) -> None:
    agent = manual_agent(org, name="Public Echo", visibility="public")
    Agent.objects.for_org(org).filter(pk=agent.pk).update(last_error="HTTP 500 from the backend at 10.1.2.3")
    page = as_user(charlie).get(f"/agents/{agent.pk}/")
    html = main_html(page)
    assert page.status_code == 200 and "A public agent of Acme" in html and "Delete" not in html
    # What the marketplace (and the API) shows: not its endpoint, errors or state, which stay acme's.
    assert agent.url not in html and "10.1.2.3" not in html and "Last seen" not in html
    assert "Its card, endpoint and state stay with Acme." in html
    assert as_user(charlie).post(f"/agents/{agent.pk}/delete/").status_code == 404


def test_marketplace_search(as_user: Any, charlie: Any, org: Any) -> None:
    manual_agent(org, name="Public Echo", visibility="public", description="repeats what you say")
    manual_agent(org, name="Secret Summarizer")
    client = as_user(charlie)
    html = main_html(client.get("/marketplace/"))
    assert "Public Echo" in html and "Secret Summarizer" not in html and "by Acme" in html
    found = client.get("/marketplace/", {"q": "repeats"}, **HX).content.decode()
    assert found.lstrip().startswith('<section id="results"') and "Public Echo" in found
    none = client.get("/marketplace/", {"q": "nothing-matches"}, **HX).content.decode()
    assert "No public agent matches" in none


def test_assign_demo_agents_once(as_user: Any, dave: Any, mia: Any, org: Any) -> None:
    assert as_user(mia).post("/agents/demo/").status_code == 403
    first = as_user(dave).post("/agents/demo/", follow=True)
    html = main_html(first)
    demo = Agent.objects.for_org(org).filter(is_demo=True)
    assert demo.count() >= 5 and "Added" in html and "demo agents" in html
    assert all(agent.name in html for agent in demo)
    again = main_html(as_user(dave).post("/agents/demo/", follow=True))
    assert "already has every demo agent" in again and Agent.objects.for_org(org).count() == demo.count()


def test_register_without_a_card(as_user: Any, dave: Any, mia: Any, org: Any) -> None:
    from apps.agents.models import Agent

    fields = {
        "name": "Legacy bot",
        "url": "https://legacy.example.com/rpc",
        "description": "no card",
        "protocol_version": "0.3",
        "streaming": "on",
        "slug": "",
        "visibility": "private",
    }
    form = {f"manual-{name}": value for name, value in fields.items()}
    page = main_html(as_user(dave).get("/agents/register/"))
    assert "data-manual-form" in page and "JSON-RPC endpoint" in page and 'id="id_manual-url"' in page
    response = as_user(dave).post("/agents/register/manual/", form)
    agent = Agent.objects.for_org(org).get(slug="legacy-bot")
    assert response.status_code == 302 and response["Location"] == f"/agents/{agent.pk}/"
    assert (agent.url, agent.protocol_version, agent.streaming, agent.card) == (
        "https://legacy.example.com/rpc",
        "0.3",
        True,
        {},
    )
    # Precise errors, nothing written: a taken slug, a metadata address, a missing name.
    for change, field_text in (
        ({"manual-slug": "legacy-bot"}, "legacy-bot"),
        ({"manual-url": "http://169.254.169.254/latest", "manual-slug": "other"}, "169.254.169.254"),
        ({"manual-name": ""}, "This field is required"),
    ):
        refused = as_user(dave).post("/agents/register/manual/", {**form, **change})
        assert refused.status_code == 422 and field_text in refused.content.decode(), change
    assert Agent.objects.for_org(org).count() == 1
    detail = main_html(as_user(dave).get(f"/agents/{agent.pk}/"))
    # No card, so no card to list skills ("The card lists no skills." was not true of it).
    assert "Registered by hand, without a card: no skills were given for it." in detail
    assert "The card lists no skills" not in detail
    # Deleting one that tasks ran on retires it: the question says so (it said such agents "cannot be deleted").
    assert (
        'data-confirm="Delete Legacy bot? If tasks ran on it, it is retired instead: kept for their timelines, '
        'no new tasks."' in detail
    )
    assert as_user(mia).post("/agents/register/manual/", form).status_code == 403
    # Reloading the URL a refused submit left in the address bar opens the page again (it was an empty 405).
    assert as_user(dave).get("/agents/register/manual/")["Location"] == "/agents/register/"


def test_the_badge_tells_an_agent_not_reached_lately_from_one_never_reached(as_user: Any, dave: Any, org: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    agent = Agent.objects.create(organization=org, name="Quiet", slug="quiet", url="http://127.0.0.1:9/")
    client = as_user(dave)
    assert "not contacted yet" in main_html(client.get(f"/agents/{agent.pk}/"))
    # Reached without error 20 minutes ago: past the online window, but it was contacted (it said "not contacted
    # yet" beside "Last seen").
    Agent.objects.for_org(org).filter(pk=agent.pk).update(last_seen_at=timezone.now() - timedelta(minutes=20))
    page = main_html(client.get(f"/agents/{agent.pk}/"))
    assert "not contacted yet" not in page and "last seen 20\xa0minutes ago" in page
    Agent.objects.for_org(org).filter(pk=agent.pk).update(last_error="HTTP 502", last_error_at=timezone.now())
    assert ">offline</span>" in main_html(client.get(f"/agents/{agent.pk}/"))
