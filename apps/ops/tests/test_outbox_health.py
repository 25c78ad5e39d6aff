from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.federation.models import Message, Outbox, OutboxStatus
from apps.ops.metrics import sample_value

pytestmark = pytest.mark.django_db


def _outbox(org: Any, status: str, age_s: float) -> Outbox:
    message = Message.objects.create(organization=org, recipient="globex", payload={"text": "hi"})
    queued = timezone.now() - timedelta(seconds=age_s)
    return Outbox.objects.create(organization=org, message=message, status=status, queued_at=queued)


def test_outbox_backlog_and_dead_letters_in_health_and_metrics(client: Client, org: Any) -> None:
    _outbox(org, OutboxStatus.PENDING, 30)
    _outbox(org, OutboxStatus.FAILED, 5)
    _outbox(org, OutboxStatus.DEAD, 3600)
    _outbox(org, OutboxStatus.DELIVERED, 3600)
    outbox = client.get("/api/v1/health").json()["checks"]["outbox"]
    assert outbox["status"] == "ok"
    assert outbox["outbox_backlog"] == 2 and outbox["dead_letters"] == 1
    assert 29 <= outbox["oldest_pending_age_s"] < 60
    assert "2 pending, 1 dead letters" in outbox["detail"]
    text = client.get("/metrics").content.decode()
    assert sample_value(text, "hermes_federation_outbox_backlog") == 2.0
    assert sample_value(text, "hermes_federation_dead_letters") == 1.0
    assert 29 <= (sample_value(text, "hermes_federation_oldest_pending_age_seconds") or 0) < 60
    assert sample_value(text, "hermes_health_status", {"check": "outbox"}) == 1.0


def test_a_stuck_outbox_degrades_health_without_failing_readiness(client: Client, org: Any) -> None:
    _outbox(org, OutboxStatus.PENDING, 900)
    response = client.get("/api/v1/health")
    body = response.json()
    assert response.status_code == 200 and body["ready"] is True
    assert body["checks"]["outbox"]["status"] == "down" and "outbox" in body["degraded"]
    assert body["status"] == "degraded"
    assert "stuck" in body["checks"]["outbox"]["fix"]


def test_with_the_database_down_the_outbox_is_unknown_not_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError

    from apps.core import checks
    from apps.federation import selectors
    from apps.ops.health import probe_outbox

    def refuse() -> Any:
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(selectors, "delivery_backlog", refuse)
    monkeypatch.setattr(checks, "database_reachable", lambda: False)
    probe = probe_outbox()
    assert probe.status == "not_available" and probe.detail == "not checked: the database is unreachable"
    assert "fix" not in probe.as_dict()  # it pointed at workers, beat and peers
    monkeypatch.setattr(checks, "database_reachable", lambda: True)  # the database answered: a real failure
    assert probe_outbox().status == "down"


def test_an_outage_found_once_is_not_waited_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ASGI each database touch waits the pool's timeout during an outage: once one check found the database
    down, the outbox probe of the same /health or /metrics answer says so without a query of its own."""
    from django.db import OperationalError, connections

    from apps.core import checks
    from apps.federation import selectors
    from apps.ops.health import probe_outbox

    connection = connections["default"]

    def refused() -> None:
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(checks, "_OUTAGE_SEEN_AT", [float("-inf")])
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    monkeypatch.setattr(connection, "ensure_connection", refused)
    assert not checks.database_recently_unreachable()
    assert checks.database_reachable() is False and checks.database_recently_unreachable()
    monkeypatch.setattr(selectors, "delivery_backlog", lambda: pytest.fail("the outbox probe queried again"))
    probe = probe_outbox()
    assert probe.status == "not_available" and probe.detail == "not checked: the database is unreachable"
    checks._OUTAGE_SEEN_AT[0] -= checks.OUTAGE_MEMO_SECONDS  # a moment later it is asked again
    assert not checks.database_recently_unreachable()
