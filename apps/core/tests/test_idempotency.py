"""Idempotency-Key: replay, conflict, errors not remembered, per-org scoping, concurrent duplicates, expiry."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.core.idempotency import IDEMPOTENCY_TTL, purge_expired
from apps.core.models import AuditEvent, IdempotencyRecord
from apps.core.tasks import purge_idempotency_records
from tests.factories import issue_api_key, key_client

pytestmark = pytest.mark.urls("apps.core.tests.idempotency_urls")
URL = "/api/v1/probes"


def _probes() -> int:
    return AuditEvent.objects.filter(action="probe.created").count()


@pytest.mark.django_db
def test_same_key_and_body_replays_and_creates_nothing(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    first = client.post(URL, {"note": "a", "n": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    # Same body with keys in another order: still the same request.
    again = client.post(URL, {"n": 1, "note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert _probes() == 1


@pytest.mark.django_db
def test_same_key_different_body_is_a_409(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    client.post(URL, {"note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    response = client.post(URL, {"note": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert _probes() == 1


@pytest.mark.django_db
def test_no_key_creates_every_time_and_bad_keys_are_400(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    client.post(URL, {"note": "a"}, format="json")
    client.post(URL, {"note": "a"}, format="json")
    assert _probes() == 2
    bad = client.post(URL, {"note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
    assert _probes() == 2


@pytest.mark.django_db
def test_errors_are_not_remembered(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    failed = client.post(URL, {"fail": True}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert failed.status_code == 422
    assert not IdempotencyRecord.objects.filter(key="k-3").exists()
    # The corrected request may reuse the key.
    fixed = client.post(URL, {"note": "ok"}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert fixed.status_code == 201 and _probes() == 1


@pytest.mark.django_db
def test_keys_are_per_org(org: Any, alice: Any, charlie: Any, other_org: Any, client_for: Any) -> None:
    ours = client_for(alice).post(URL, {"note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    theirs = client_for(charlie).post(URL, {"note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert ours.status_code == theirs.status_code == 201
    assert ours.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs


@pytest.mark.django_db
def test_expired_records_are_forgotten(org: Any, alice: Any, client_for: Any) -> None:
    client = client_for(alice)
    client.post(URL, {"note": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - IDEMPOTENCY_TTL - timedelta(1))
    response = client.post(URL, {"note": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert response.status_code == 201 and _probes() == 2
    IdempotencyRecord.objects.update(created_at=timezone.now() - IDEMPOTENCY_TTL - timedelta(1))
    assert purge_idempotency_records() == 1
    assert purge_expired() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_once(org: Any, alice: Any) -> None:
    _, plaintext = issue_api_key(alice, org, scopes=["tasks:write"])
    barrier = threading.Barrier(3)
    results: list[Any] = []

    def send() -> None:
        try:
            client = key_client(plaintext)
            barrier.wait()
            response = client.post(f"{URL}?delay=0.3", {"note": "race"}, format="json", HTTP_IDEMPOTENCY_KEY="race")
            results.append((response.status_code, response.json(), response.get("Idempotent-Replayed")))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [status for status, _, _ in results] == [201, 201, 201]
    assert len({body["id"] for _, body, _ in results}) == 1
    assert sorted(replayed or "" for _, _, replayed in results) == ["", "true", "true"]
    assert _probes() == 1
