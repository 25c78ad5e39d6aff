"""Quotas: 429 with headers and guidance, per-key limits, tasks per day, usage, and fail-open with Redis down."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from apps.core.permissions import Access
from apps.orgs import quotas
from apps.orgs.models import PLAN_LIMITS, Organization
from hermes_site.embedded import start_redis, stop_redis
from tests.factories import issue_api_key, key_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request of a test falls in the same minute window (no flakiness at a minute boundary)."""
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)


@pytest.fixture
def tiny_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The free plan at 3 requests/minute and 2 tasks/day, so limits are reached in a few requests."""
    from apps.orgs import models

    monkeypatch.setitem(models.PLAN_LIMITS, "free", models.PlanLimits(requests_per_minute=3, tasks_per_day=2))


def _fail_open_count() -> float:
    return REGISTRY.get_sample_value("hermes_quota_fail_open_total") or 0.0


def test_requests_get_rate_limit_headers(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    response = key_client(plaintext).get("/api/v1/me")
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == str(PLAN_LIMITS["free"].requests_per_minute)
    assert response["X-RateLimit-Remaining"] == str(PLAN_LIMITS["free"].requests_per_minute - 1)
    assert int(response["X-RateLimit-Reset"]) % 60 == 0


def test_over_the_limit_is_a_429_with_headers_and_guidance(org: Any, alice: Any, tiny_plan: None) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)
    remaining = [client.get("/api/v1/me")["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    refused = client.get("/api/v1/me")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Limit"] == "3" and refused["X-RateLimit-Remaining"] == "0"
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["limit"] == "org_requests_per_minute"
    assert error["details"]["plan"] == "free"
    assert "resets_at" in error["details"]
    assert "PATCH /api/v1/orgs/acme" in error["details"]["how_to_raise"]
    assert "Team" in error["message"]
    # The session counts against the same org quota.
    from rest_framework.test import APIClient

    session = APIClient()
    session.force_login(alice)
    assert session.get("/api/v1/me").status_code == 429


def test_other_orgs_are_not_affected(org: Any, alice: Any, other_org: Any, charlie: Any, tiny_plan: None) -> None:
    _, ours = issue_api_key(alice, org, scopes=["org:read"])
    _, theirs = issue_api_key(charlie, other_org, scopes=["org:read"])
    for _ in range(3):
        key_client(ours).get("/api/v1/me")
    assert key_client(ours).get("/api/v1/me").status_code == 429
    assert key_client(theirs).get("/api/v1/me").status_code == 200


def test_a_key_can_have_its_own_lower_limit(org: Any, alice: Any) -> None:
    _, limited = issue_api_key(alice, org, scopes=["org:read"], rate_limit_per_minute=2)
    _, unlimited = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(limited)
    assert client.get("/api/v1/me")["X-RateLimit-Limit"] == "2"
    client.get("/api/v1/me")
    refused = client.get("/api/v1/me")
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["limit"] == "key_requests_per_minute"
    assert "an admin can create a key with a higher limit or none" in refused.json()["error"]["message"]
    assert key_client(unlimited).get("/api/v1/me").status_code == 200


def test_tasks_per_day(org: Any, tiny_plan: None) -> None:
    quotas.check_task_quota(org)
    assert quotas.reserve_task(org) is not None
    assert quotas.record_task(org) == 2
    with pytest.raises(quotas.QuotaExceeded) as err:
        quotas.check_task_quota(org)
    assert err.value.error_code == "quota_exceeded" and err.value.status_code == 429
    assert err.value.details["limit"] == "tasks_per_day"
    with pytest.raises(quotas.QuotaExceeded):
        quotas.reserve_task(org)
    assert quotas.usage(org)["days"][0]["tasks"] == 2


def test_usage_counts_accepted_calls(org: Any, alice: Any, client_for: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    for _ in range(3):
        key_client(plaintext).get("/api/v1/me")
    body = quotas.usage(org, days=3)
    assert body["available"] is True and body["plan"] == "free"
    assert body["days"][0]["api_calls"] == 3 and len(body["days"]) == 3
    assert body["requests_this_minute"] == 3


def test_redis_down_fails_open_and_recovers(
    org: Any, alice: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, tiny_plan: None
) -> None:
    url, proc = start_redis(directory=tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings.REDIS_URL = url
    monkeypatch.setattr(quotas, "FAIL_OPEN_BACKOFF", 0.0)
    _, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    client = key_client(plaintext)
    assert client.get("/api/v1/me")["X-RateLimit-Remaining"] == "2"
    stop_redis(proc, directory=tmp_path)
    before = _fail_open_count()
    for _ in range(5):  # over the tiny limit, but nothing can count: served
        response = client.get("/api/v1/me")
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response
    assert _fail_open_count() - before == 5
    assert quotas.reserve_task(org) is None and quotas.record_task(org) is None
    quotas.check_task_quota(org)
    assert quotas.usage(org)["available"] is False
    # Redis comes back (same address): counting resumes by itself.
    _, proc = start_redis(port=port, directory=tmp_path)
    try:
        assert client.get("/api/v1/me")["X-RateLimit-Remaining"] == "2"
    finally:
        stop_redis(proc, directory=tmp_path)


def test_backoff_skips_redis_after_a_failure(org: Any, settings: Any, free_port: int) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port}/0"  # nothing listens there
    access = Access(org=org, role="owner")
    before = _fail_open_count()
    assert quotas.check_request(access) is None
    assert quotas._gate.down_until > 0
    assert quotas.check_request(access) is None  # within the backoff: not even tried
    assert _fail_open_count() - before == 2


def test_plan_upgrade_raises_the_limit(org: Any) -> None:
    org.plan = "team"
    org.save()
    fresh = Organization.objects.get(pk=org.pk)
    decision = quotas.check_request(Access(org=fresh, role="owner"))
    assert decision is not None and decision.limit == PLAN_LIMITS["team"].requests_per_minute
    enterprise = quotas.Decision(False, "org_requests_per_minute", 1, 1, 60, 0, Organization(plan="enterprise"))
    assert "largest plan" in enterprise.how_to_raise()


def test_usage_endpoint(org: Any, alice: Any, mia: Any, client_for: Any) -> None:
    client = client_for(mia)
    client.get("/api/v1/me")
    body = client.get("/api/v1/usage?days=2").json()
    assert body["plan"] == "free" and len(body["days"]) == 2
    assert body["days"][0]["api_calls"] == 2  # /me, then this request itself
    for days in ("x", "0", "-3"):
        error = client.get(f"/api/v1/usage?days={days}").json()["error"]
        assert error["message"] == "'days' must be a whole number from 1 to 35."  # 0 and -3 were read as 1
    assert len(client.get("/api/v1/usage?days=99").json()["days"]) == 35
    _, tasks_only = issue_api_key(alice, org, scopes=["tasks:read"])
    assert key_client(tasks_only).get("/api/v1/usage").json()["error"]["code"] == "missing_scope"
