"""A disabled link: new conversations are refused, replies to ones under way wait in its outbox, nothing is sent
until it is enabled again, and enabling it sends what waited."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.core.errors import HermesAPIError
from apps.federation import actions
from apps.federation.models import Message, MessageType, Outbox, OutboxStatus, Peer

pytestmark = pytest.mark.django_db


def _a_row_waiting_for_the_disabled_link(org: Any, peer: Peer, monkeypatch: Any, capture: Any) -> tuple[list[int], Any]:
    """A message sent while the link was up, then the link disabled; returns the list the (patched) delivery jobs
    are enqueued to and the message's outbox row."""
    enqueued: list[int] = []
    monkeypatch.setattr(actions, "_enqueue", lambda outbox_id, countdown=0.0: enqueued.append(outbox_id))
    with capture(execute=True):
        message = actions.send_message(org=org, recipient="globex@berlin", payload={"n": 1})
    actions.set_peer_status(peer, "disabled")
    return enqueued, Outbox.objects.for_org(org).select_related("message").get(message=message)


def test_a_disabled_link_keeps_replies_and_sends_them_once_enabled(
    org: Any, peer: Peer, allow_all: None, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    enqueued, waiting_row = _a_row_waiting_for_the_disabled_link(
        org, peer, monkeypatch, django_capture_on_commit_callbacks
    )
    waiting = waiting_row.message
    # Something new for the link is refused at once, with its reason.
    with pytest.raises(HermesAPIError) as refused:
        actions.send_message(org=org, recipient="globex@berlin", payload={"n": 2})
    assert refused.value.error_code == "peer_disabled"
    # A reply belongs to a conversation under way (a task's results, its cancel): kept, not lost.
    with django_capture_on_commit_callbacks(execute=True):
        reply = actions.send_message(
            org=org, recipient="echo.globex@berlin", type=MessageType.TASK_CANCEL, payload={},
            correlation_id=uuid.uuid4(), reply=True,
        )  # fmt: skip
    rows = [Outbox.objects.for_org(org).get(message=m) for m in (waiting, reply)]
    assert [row.status for row in rows] == [OutboxStatus.PENDING, OutboxStatus.PENDING]
    # Nothing is sent while the link is off: no claim, and the sweeper does not spin on the rows.
    assert all(actions.claim_delivery(row.pk) is None for row in rows)
    enqueued.clear()
    Outbox.objects.for_org(org).update(next_attempt_at="2000-01-01T00:00:00Z")
    assert actions.sweep()["requeued"] == 0 and enqueued == []
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_peer_status(peer, "active")
    assert sorted(enqueued) == sorted(row.pk for row in rows)
    assert actions.claim_delivery(rows[1].pk) is not None


def test_enabling_a_link_in_the_admin_sends_what_waited_at_once(
    org: Any, peer: Peer, allow_all: None, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    enqueued, row = _a_row_waiting_for_the_disabled_link(org, peer, monkeypatch, django_capture_on_commit_callbacks)
    Outbox.objects.for_org(org).filter(pk=row.pk).update(next_attempt_at="2000-01-01T00:00:00Z")
    enqueued.clear()
    staff = get_user_model().objects.create_superuser(email="root@example.com", password="pw-for-tests-only")
    admin = Client()
    admin.force_login(staff)
    form = {"base_url": peer.base_url, "status": "active", "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0"}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"/admin/federation/peer/{peer.pk}/change/", form)
    assert response.status_code == 302, response.content
    peer.refresh_from_db()
    assert peer.status == "active" and enqueued == [row.pk]


def test_a_peer_that_stopped_answering_gets_one_attempt_at_a_time(
    org: Any, peer: Peer, allow_all: None, monkeypatch: Any
) -> None:
    """Each attempt to a peer that never answers holds a worker slot for a whole timeout: task runs and deliveries to
    every other peer waited behind a backlog of them."""
    from django.utils import timezone

    from apps.federation.delivery import AttemptOutcome, AttemptResult

    monkeypatch.setattr(actions, "_enqueue", lambda outbox_id, countdown=0.0: None)
    messages = [actions.send_message(org=org, recipient="globex@berlin", payload={"n": n}) for n in range(3)]
    rows = [Outbox.objects.for_org(org).get(message=m) for m in messages]
    first, second = actions.claim_delivery(rows[0].pk), actions.claim_delivery(rows[1].pk)
    assert first is not None and second is not None  # a peer that answers takes attempts side by side
    timed_out = AttemptResult(AttemptOutcome.RETRY, 10_000.0, error="timeout: the peer's answer took longer than 10 s")
    assert actions.finish_attempt(first, timed_out) == "failed"
    peer.refresh_from_db()
    assert peer.slow_until is not None and peer.slow_until > timezone.now()
    # One attempt (the second) is in flight: the third waits its turn, pushed past a timeout for the sweeper.
    assert actions.claim_delivery(rows[2].pk) is None
    rows[2].refresh_from_db()
    assert rows[2].status == OutboxStatus.PENDING and rows[2].next_attempt_at > timezone.now()
    # The peer answers again: no longer slow, and the waiting row goes when it is due.
    delivered = AttemptResult(AttemptOutcome.DELIVERED, 20.0, http_status=200, receipt={"ok": True})
    assert actions.finish_attempt(second, delivered) == "delivered"
    peer.refresh_from_db()
    assert peer.slow_until is None
    Outbox.objects.for_org(org).filter(pk=rows[2].pk).update(next_attempt_at=timezone.now())
    assert actions.claim_delivery(rows[2].pk) is not None


def test_a_row_held_back_by_a_disabled_link_says_why(
    org: Any, alice: Any, client_for: Any, peer: Peer, allow_all: None, monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    _enqueued, row = _a_row_waiting_for_the_disabled_link(org, peer, monkeypatch, django_capture_on_commit_callbacks)
    why = "waiting: link 'berlin' is disabled"
    api = client_for(alice)
    assert api.get(f"/api/v1/federation/messages/{row.message_id}").json()["delivery"]["held_back_reason"] == why
    assert api.get("/api/v1/federation/messages").json()["results"][0]["delivery"]["held_back_reason"] == why
    console = Client()
    console.force_login(alice)
    for page in (reverse("federation:outbox"), reverse("federation:message", args=[row.message_id])):
        assert "Waiting: link &#x27;berlin&#x27; is disabled" in console.get(page).content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        actions.set_peer_status(peer, "active")
    assert api.get(f"/api/v1/federation/messages/{row.message_id}").json()["delivery"]["held_back_reason"] == ""


def test_the_console_shows_when_a_message_was_created_not_when_it_was_requeued(
    org: Any, alice: Any, peer: Peer, allow_all: None, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    _enqueued, row = _a_row_waiting_for_the_disabled_link(org, peer, monkeypatch, django_capture_on_commit_callbacks)
    created = timezone.now() - timedelta(hours=3)
    Message.objects.for_org(org).filter(pk=row.message_id).update(created_at=created)
    Outbox.objects.for_org(org).filter(pk=row.pk).update(queued_at=timezone.now())  # as a requeue resets it
    console = Client()
    console.force_login(alice)
    outbox = console.get(reverse("federation:outbox")).content.decode()
    assert f'datetime="{created.isoformat()}"' in outbox
    page = console.get(reverse("federation:message", args=[row.message_id])).content.decode()
    assert "<dt>Created</dt>" in page and f'datetime="{created.isoformat()}"' in page and "<dt>Queued</dt>" in page
