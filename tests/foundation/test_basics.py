from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from apps.core import context
from apps.core.permissions import Access, Role, matrix_markdown, role_allows
from apps.ops.tasks import BEAT_KEY, beat_heartbeat
from apps.orgs.models import Membership, Organization


def test_liveness_echoes_the_request_id(client: Client) -> None:
    response = client.get("/api/v1/health/live", HTTP_X_REQUEST_ID="abc-123")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["X-Request-ID"] == "abc-123"
    generated = client.get("/api/v1/health/live")["X-Request-ID"]
    assert len(generated) == 32


def test_unknown_url_answers_with_the_error_shape(client: Client) -> None:
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_api_docs_and_favicon_need_no_internet(client: Client) -> None:
    page = client.get("/api/v1/docs/").content.decode()
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui-bundle.js" in url for url in scripts), scripts
    # Every asset of the page is Hermes' own: an instance without internet access still has its API docs.
    assert all(url.startswith("/") for url in scripts), scripts
    for url in scripts:
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, url
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"] == "/static/img/favicon.svg"


@pytest.mark.django_db
def test_seed_demo_is_idempotent() -> None:
    for _ in range(2):
        call_command("seed_demo", stdout=io.StringIO())
    org = Organization.objects.get(slug="demo")
    assert Membership.objects.for_org(org).get().role == Role.OWNER
    # The built-in demo agents come with it, once.
    from apps.agents.demo.specs import DEMO_AGENTS
    from apps.agents.models import Agent

    assert sorted(Agent.objects.for_org(org).values_list("demo_key", flat=True)) == sorted(s.slug for s in DEMO_AGENTS)
    # And a partner org the demo org may ask for tasks over federation (both ways allowed, once).
    from apps.federation.models import Policy

    partner = Organization.objects.get(slug="partner")
    assert Agent.objects.for_org(partner).filter(slug="demo-echo").exists()
    assert list(Policy.objects.for_org(org).values_list("remote", "effect")) == [("partner", "allow")]
    assert list(Policy.objects.for_org(partner).values_list("remote", "effect")) == [("demo", "allow")]


def test_role_matrix() -> None:
    assert role_allows(Role.OWNER, "org:delete")
    assert not role_allows(Role.ADMIN, "org:roles")
    assert role_allows(Role.DEVELOPER, "agents:write") and not role_allows(Role.DEVELOPER, "org:admin")
    assert role_allows(Role.MEMBER, "tasks:write") and not role_allows(Role.MEMBER, "agents:write")
    with pytest.raises(KeyError):
        role_allows(Role.OWNER, "nope")
    key_access = Access(org=None, role=Role.OWNER, scopes=frozenset({"tasks:read"}))
    assert key_access.allows("tasks:read") and not key_access.allows("tasks:write")
    assert "| `org:delete` |" in matrix_markdown()


def test_log_context_binding() -> None:
    context.clear()
    with context.bound(task_id="t1"):
        context.bind(org_id=7)
        assert context.get_context() == {"task_id": "t1", "org_id": 7}
    assert "task_id" not in context.get_context()


def test_beat_heartbeat_records_its_time(settings: Any) -> None:
    from django.core.cache import caches

    beat_heartbeat()
    assert caches["default"].get(BEAT_KEY) is not None
