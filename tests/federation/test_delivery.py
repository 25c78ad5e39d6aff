"""Sending and delivery in one process: same-instance delivery, real HTTP to this instance (live_server) and to a
scripted server, the retry policy, claims, the sweeper and the DLQ."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from apps.agents.models import Agent
from apps.core.errors import HermesAPIError
from apps.core.metrics import FEDERATION_DELIVERIES, FEDERATION_RETRIES
from apps.federation import actions, delivery, signing
from apps.federation.models import (
    AuditEvent,
    DeliveryAttempt,
    Effect,
    FederationAuditEvent,
    InboxEntry,
    Message,
    Outbox,
    OutboxStatus,
    Peer,
    PeerStatus,
)
from apps.federation.selectors import delivery_backlog
from tests.federation.stub_server import Reply, StubServer

SECRET = b"s" * 32


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer(receipt_secret=SECRET)
    yield server
    server.close()


@pytest.fixture
def stub_peer(db: Any, stub: StubServer, org: Any) -> Peer:
    peer = actions.create_peer(name="stub", base_url=stub.url, local_name="paris")
    actions.add_key(peer, secret=SECRET)
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    return peer


def outbox_of(message: Message) -> Outbox:
    return Outbox.objects.for_org(message.organization).get(message=message)


def audit_kinds(message: Message) -> list[str]:
    rows = FederationAuditEvent.objects.unscoped("test").filter(message_id=message.id).order_by("pk")
    return [e.event for e in rows]


def send(org: Any, recipient: str = "globex@stub", **kw: Any) -> Message:
    return actions.send_message(org=org, recipient=recipient, payload={"n": 1}, **kw)


def signed_receipt(message_id: str) -> Reply:
    body = json.dumps({"receipt": {"message_id": message_id, "status": "accepted"}}).encode()
    return Reply(200, signing.sign_headers(message_id, body, [SECRET]), body)


@pytest.mark.django_db
def test_same_instance_delivery_keeps_receipts_dedup_and_audit(
    org: Any, other_org: Any, allow_all: None, eager_celery: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        message = send(
            org, "globex", sender_agent=Agent.objects.create(organization=org, name="Echo", slug="echo").slug
        )
    row = outbox_of(message)
    assert row.status == OutboxStatus.DELIVERED and row.attempts == 1
    assert row.receipt is not None and row.receipt["status"] == "accepted"
    entry = InboxEntry.objects.for_org(other_org).get(message_id=message.id)
    assert entry.sender == "echo.acme" and entry.peer is None and entry.handled_at is not None
    assert audit_kinds(message) == ["accepted", "delivered"]
    # A second delivery of the same message (a requeue after a lost receipt) is a duplicate, not a second copy.
    Outbox.objects.for_org(org).filter(pk=row.pk).update(status=OutboxStatus.DEAD)
    with django_capture_on_commit_callbacks(execute=True):
        actions.requeue([row])
    assert outbox_of(message).status == OutboxStatus.DELIVERED
    assert InboxEntry.objects.for_org(other_org).filter(message_id=message.id).count() == 1
    assert audit_kinds(message)[-3:] == ["requeued", "duplicate", "delivered"]
    assert delivery.deliver(row.pk) is None  # delivered rows are never claimed again


@pytest.mark.django_db
def test_send_validates_address_peer_and_policy(
    org: Any, stub_peer: Peer, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with pytest.raises(HermesAPIError, match="not a federation address"):
        send(org, "not an address")
    with pytest.raises(HermesAPIError, match="No peer named 'rome'"):
        send(org, "globex@rome")
    actions.set_policy(org=org, remote="globex@stub", effect=Effect.DENY)
    # The caller catches the refusal and its transaction commits: the denial is audited on commit.
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(HermesAPIError, match="policy forbids"):
        send(org, actor=alice)
    assert not Message.objects.for_org(org).exists()
    denied = FederationAuditEvent.objects.for_org(org).get(event=AuditEvent.POLICY_DENIED)
    assert denied.actor == alice  # who tried (it was null)
    # An unknown org on this instance is refused up front (it could only be dead-lettered; with no rule for it
    # the refusal blamed the policy); an unknown org on a peer is found out by delivery.
    with pytest.raises(HermesAPIError, match="There is no organization 'initech' on this instance"):
        send(org, "initech")
    with pytest.raises(HermesAPIError, match="'Bad Agent!' is not an agent slug"):
        actions.send_message(org=org, recipient="globex@stub", payload={}, sender_agent="Bad Agent!")
    actions.set_peer_status(stub_peer, "disabled")
    with pytest.raises(HermesAPIError, match="disabled"):
        send(org, "x@stub")


@pytest.mark.django_db(transaction=True)
def test_delivery_over_real_http_to_this_instance(live_server: Any, org: Any, other_org: Any) -> None:
    """A peer that is this very instance: the whole wire path (sign, POST, verify, dedup, signed receipt)."""
    # Two ends of one link, as two instances would have them (one name at both ends binds nothing, and is refused).
    for name, local_name in (("loop-out", "loop-in"), ("loop-in", "loop-out")):
        end = actions.create_peer(name=name, base_url=live_server.url, local_name=local_name)
        actions.add_key(end, secret=SECRET)
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    actions.set_policy(org=other_org, remote="acme@loop-in", effect=Effect.ALLOW)
    message = send(org, "globex@loop-out")  # committed: the (eager) Celery job delivers it
    row = outbox_of(message)
    assert row.status == OutboxStatus.DELIVERED
    assert InboxEntry.objects.for_org(other_org).get(message_id=message.id).sender == "acme@loop-in"
    # The persisted receipt is the peer's signed proof of delivery: it re-verifies with any Standard Webhooks library.
    proof = {
        "webhook-id": str(message.id),
        "webhook-timestamp": str(row.receipt_timestamp),
        "webhook-signature": row.receipt_signature,
    }
    assert Webhook(signing.encode_secret(SECRET)).verify(row.receipt_body, proof)["receipt"] == row.receipt
    attempt = DeliveryAttempt.objects.for_org(org).get(outbox=row)
    assert attempt.http_status == 200 and attempt.outcome == "delivered" and attempt.duration_ms > 0


@pytest.mark.django_db
@override_settings(HERMES_FEDERATION_TIMEOUT=0.5, HERMES_FEDERATION_MAX_ATTEMPTS=4)
def test_retry_policy_classifies_each_failure(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    message = send(org)
    row_id = outbox_of(message).pk
    retries = FEDERATION_RETRIES._value.get()

    def attempt(reply: Reply | None) -> Outbox:
        if reply is not None:
            stub.script.append(reply)
        Outbox.objects.for_org(org).filter(pk=row_id).update(next_attempt_at=timezone.now())
        delivery.deliver(row_id)
        return outbox_of(message)

    before = timezone.now()
    row = attempt(Reply(503, {"Retry-After": "7"}, b"busy"))
    assert row.status == OutboxStatus.FAILED
    assert timedelta(seconds=6.5) < row.next_attempt_at - before < timedelta(seconds=8.5)  # Retry-After honored
    assert attempt(Reply(delay=1.0)).status == OutboxStatus.FAILED  # timeout
    assert attempt(Reply(drop=True)).status == OutboxStatus.FAILED  # connection reset
    row = attempt(Reply(500, body=b"boom"))
    assert row.status == OutboxStatus.DEAD and row.attempts == 4  # max attempts reached
    log = list(DeliveryAttempt.objects.for_org(org).filter(outbox=row).order_by("number"))
    assert [a.http_status for a in log] == [503, None, None, 500]
    assert log[1].error == "timeout: the peer's answer took longer than 0.5 s" and "Error" in log[2].error
    assert log[3].response_excerpt == "boom"
    # The attempt that ran out of retries says so: it dead-lettered the row, nothing retries it.
    assert [a.outcome for a in log] == ["retry", "retry", "retry", "dead"]
    assert FEDERATION_RETRIES._value.get() == retries + 3
    assert audit_kinds(message) == ["retried", "retried", "retried", "dead_lettered"]
    # Each request was signed for the same message id: the idempotency key across retries.
    assert {r["headers"]["webhook-id"] for r in stub.requests} == {str(message.id)}
    for request in stub.requests:
        Webhook(signing.encode_secret(SECRET)).verify(request["body"], request["headers"])
    # After the fault is fixed a requeue delivers.
    actions.requeue([row], reason="fixed")
    stub.script.append(signed_receipt(str(message.id)))
    assert delivery.deliver(row_id) == OutboxStatus.DELIVERED
    assert outbox_of(message).receipt == {"message_id": str(message.id), "status": "accepted"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "dead"), (401, "dead"), (403, "dead"), (404, "dead"), (408, "failed"), (425, "failed"), (429, "failed")],
)
def test_4xx_are_permanent_except_408_425_429(
    org: Any, stub_peer: Peer, stub: StubServer, status: int, expected: str
) -> None:
    message = send(org)
    stub.script.append(Reply(status, body=b'{"error": {}}'))
    assert delivery.deliver(outbox_of(message).pk) == expected


@pytest.mark.django_db
def test_the_peers_error_code_and_message_are_the_last_error(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    refusal = {"error": {"code": "policy_denied", "message": "globex does not accept messages from acme@paris."}}
    message = send(org)
    stub.script.append(Reply(403, {"Content-Type": "application/json"}, json.dumps(refusal).encode()))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.DEAD
    expected = "HTTP 403: policy_denied: globex does not accept messages from acme@paris."
    assert outbox_of(message).last_error == expected
    dead = FederationAuditEvent.objects.for_org(org).get(event=AuditEvent.DEAD_LETTERED, message_id=message.id)
    assert dead.reason == f"permanent failure ({expected})"
    # A body that is not a Hermes error (a proxy's HTML page) leaves the status alone; one past the answer size
    # limit is not read to the end, and says so.
    for body, last_error in (
        (b"<html>Bad Gateway</html>", "HTTP 404"),
        (b'{"error": "x"}', "HTTP 404"),
        (json.dumps({"error": {"code": "x" * 70_000}}).encode(), "HTTP 404: the peer's answer exceeded 65536 bytes"),
    ):
        other = send(org)
        stub.script.append(Reply(404, body=body))
        delivery.deliver(outbox_of(other).pk)
        assert outbox_of(other).last_error == last_error


def test_default_retry_budget_rides_out_a_peer_restart(settings: Any) -> None:
    from hermes_site.config import SETTINGS_TABLE

    defaults = {s.name: s.default for s in SETTINGS_TABLE if s.name.startswith("HERMES_FEDERATION_")}
    attempts = int(defaults["HERMES_FEDERATION_MAX_ATTEMPTS"])
    base, cap = float(defaults["HERMES_FEDERATION_RETRY_BASE"]), float(defaults["HERMES_FEDERATION_RETRY_MAX_DELAY"])
    assert attempts == settings.HERMES_FEDERATION_MAX_ATTEMPTS  # settings.py and the documented contract agree
    caps = [min(cap, base * 2 ** (n - 1)) for n in range(1, attempts)]  # the retries' backoff caps
    # Full jitter waits half the cap on average: about 32 min here (it was about 2 min, so a peer down ~90 s
    # dead-lettered messages), the 300 s cap matters, and the whole budget stays well inside the max age.
    assert sum(caps) / 2 > 30 * 60 and caps.count(cap) >= 5
    assert sum(caps) < int(defaults["HERMES_FEDERATION_MAX_AGE"])


@pytest.mark.django_db
def test_unsigned_or_forged_receipts_are_not_trusted(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    message = send(org)
    stub.script.append(Reply(200, body=b'{"receipt": {}}'))  # a 200 without the peer's signature
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED
    assert "receipt rejected" in outbox_of(message).last_error
    Outbox.objects.for_org(org).filter(message=message).update(next_attempt_at=timezone.now())
    other = signed_receipt("00000000-0000-0000-0000-000000000000")  # signed, but for another message
    stub.script.append(other)
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED
    Outbox.objects.for_org(org).filter(message=message).update(next_attempt_at=timezone.now())
    body = b"not json"
    stub.script.append(Reply(200, signing.sign_headers(str(message.id), body, [SECRET]), body))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED
    assert "not JSON" in outbox_of(message).last_error


@pytest.mark.django_db
def test_max_age_dead_letters(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    message = send(org)
    Outbox.objects.for_org(org).filter(message=message).update(queued_at=timezone.now() - timedelta(days=2))
    stub.script.append(Reply(503))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.DEAD
    assert "max age" in FederationAuditEvent.objects.for_org(org).get(event="dead_lettered").reason


def test_backoff_is_full_jitter_and_retry_after_parses() -> None:
    with override_settings(HERMES_FEDERATION_RETRY_BASE=1.0, HERMES_FEDERATION_RETRY_MAX_DELAY=8.0):
        samples = [actions.backoff_delay(4) for _ in range(300)]
        assert 0 <= min(samples) < 1 and 6 < max(samples) <= 8  # uniform over [0, 1 * 2^3]
        assert max(actions.backoff_delay(30) for _ in range(50)) <= 8  # capped
        assert actions.backoff_delay(1, retry_after=5) >= 5
        assert actions.backoff_delay(1, retry_after=999) == 8  # a peer cannot park us beyond the cap
    assert delivery.parse_retry_after("3") == 3.0
    assert delivery.parse_retry_after(None) is None and delivery.parse_retry_after("soon") is None
    from email.utils import format_datetime

    future = format_datetime(timezone.now() + timedelta(seconds=60), usegmt=True)
    assert 55 < (delivery.parse_retry_after(future) or 0) <= 60


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_claim_the_same_attempt(org: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    rows = [outbox_of(send(org, "acme")) for _ in range(5)]
    # Make them due again (the eager Celery job already delivered each once) so six racers can fight over them.
    Outbox.objects.for_org(org).update(status=OutboxStatus.PENDING, next_attempt_at=timezone.now())
    barrier = threading.Barrier(6)
    claims: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        from django.db import connection

        barrier.wait()
        for row in rows:
            claimed = actions.claim_delivery(row.pk)
            if claimed is not None:
                with lock:
                    claims.append(claimed.pk)
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == sorted(r.pk for r in rows)  # each row claimed exactly once across six racers


@pytest.mark.django_db
def test_sweeper_expires_leases_requeues_overdue_and_counts_dead(
    org: Any, stub_peer: Peer, stub: StubServer, eager_celery: None
) -> None:
    lost = outbox_of(send(org))
    assert actions.claim_delivery(lost.pk) is not None  # a worker took it ... and died
    Outbox.objects.for_org(org).filter(pk=lost.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    overdue = outbox_of(send(org))  # its Celery message was lost
    Outbox.objects.for_org(org).filter(pk=overdue.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=5))
    dead = outbox_of(send(org))
    Outbox.objects.for_org(org).filter(pk=dead.pk).update(status=OutboxStatus.DEAD)
    result = actions.sweep()
    assert result["expired_leases"] == 1 and result["dead_letters"] == 1
    # The lost lease is due again at once; this sweep or the next re-enqueues it (eager: delivers inline).
    actions.sweep()
    assert outbox_of(lost.message).status == OutboxStatus.DELIVERED
    assert outbox_of(overdue.message).status == OutboxStatus.DELIVERED
    assert delivery_backlog() == {"outbox_backlog": 0, "dead_letters": 1, "oldest_pending_age_s": None}
    waiting = outbox_of(send(org))
    figures = delivery_backlog()
    assert figures["outbox_backlog"] == 1 and figures["oldest_pending_age_s"] is not None
    assert waiting.status == OutboxStatus.PENDING


@pytest.mark.django_db
def test_delivery_metrics_count_outcomes(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    delivered = FEDERATION_DELIVERIES.labels(outcome="delivered")._value.get()
    message = send(org)
    stub.script.append(signed_receipt(str(message.id)))
    delivery.deliver(outbox_of(message).pk)
    assert FEDERATION_DELIVERIES.labels(outcome="delivered")._value.get() == delivered + 1


@pytest.mark.django_db
def test_a_peer_on_a_private_address_is_refused_by_the_ssrf_guard(org: Any, stub_peer: Peer, settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    message = send(org)
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.DEAD
    assert "SSRF guard" in outbox_of(message).last_error


@pytest.mark.django_db
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_dead_lettered_saying_it_is_not_followed(
    org: Any, stub_peer: Peer, stub: StubServer, status: int
) -> None:
    message = send(org)
    stub.script.append(Reply(status, {"Location": "https://berlin.example/api/v1/federation/receive/paris"}, b""))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.DEAD
    assert outbox_of(message).last_error == (
        f"HTTP {status}: redirects are not followed (Location: https://berlin.example/api/v1/federation/receive/"
        "paris); if the peer moved, correct its base_url"
    )
    assert len(stub.requests) == 1  # and nothing was sent to where it points
    other = send(org)
    stub.script.append(Reply(status, {}, b""))
    delivery.deliver(outbox_of(other).pk)
    assert "redirects are not followed (no Location header)" in outbox_of(other).last_error


@pytest.mark.django_db
def test_a_huge_answer_is_not_read_in_full(org: Any, stub_peer: Peer, stub: StubServer) -> None:
    """A 5 MB error page was read in full; an answer is read up to 64 KiB, and the attempt log keeps its start."""
    from apps.federation.transport import MAX_ANSWER_BYTES

    huge = b"<html>" + b"x" * (5 * 1024 * 1024)
    message = send(org)
    stub.script.append(Reply(500, {"Content-Type": "text/html"}, huge))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED  # a 500 is retried, as ever
    attempt = DeliveryAttempt.objects.for_org(org).get(outbox__message=message)
    assert MAX_ANSWER_BYTES == 65536 and attempt.error == "the peer's answer exceeded 65536 bytes"
    assert attempt.http_status == 500 and attempt.response_excerpt == huge[:500].decode()
    # A 4xx keeps its meaning (the status says what happened), with the same note instead of the peer's reason.
    refused = send(org)
    stub.script.append(Reply(403, {}, huge))
    assert delivery.deliver(outbox_of(refused).pk) == OutboxStatus.DEAD
    assert outbox_of(refused).last_error == "HTTP 403: the peer's answer exceeded 65536 bytes"
    # No receipt is that big: a huge 2xx, even signed, is retried as a transport failure.
    big = send(org)
    body = json.dumps({"receipt": {"message_id": str(big.id), "status": "accepted"}, "pad": "x" * 70_000}).encode()
    stub.script.append(Reply(200, signing.sign_headers(str(big.id), body, [SECRET]), body))
    assert delivery.deliver(outbox_of(big).pk) == OutboxStatus.FAILED
    assert outbox_of(big).last_error == "HTTP 200: the peer's answer exceeded 65536 bytes"


@pytest.mark.django_db
def test_a_message_reflected_back_at_its_sender_is_refused(
    org: Any, other_org: Any, stub_peer: Peer, stub: StubServer
) -> None:
    """The link key is the same both ways, so a message we sent to `stub` verifies here too: posted back unchanged
    to our own /receive/stub it was accepted as one from stub. The direction is signed, and refused here."""
    actions.set_policy(org=other_org, remote="*", effect=Effect.ALLOW)  # globex here would accept anything
    message = send(org)  # acme -> globex@stub
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.DELIVERED
    sent = stub.requests[-1]
    # The binding is inside what is signed: any Standard Webhooks library sees it in the verified body. It names
    # the ends as the receiver does: we are `paris` there (our local_name), it is `stub` here.
    verified = Webhook(signing.encode_secret(SECRET)).verify(sent["body"], sent["headers"])
    assert verified["link"] == {"from": "paris", "to": "stub"}
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in sent["headers"].items() if k.startswith("webhook")}
    reflected = Client().post("/api/v1/federation/receive/stub", sent["body"], "application/json", **headers)
    assert reflected.status_code == 401, reflected.content
    error = reflected.json()["error"]
    assert error["code"] == "wrong_link"
    assert error["message"] == (
        "the message is bound to the link from 'paris' to 'stub': it is one this instance sent to 'stub', posted back "
        "to it (this link is from 'stub' to 'paris')"
    )
    assert not InboxEntry.objects.for_org(other_org).exists()
    (refusal,) = FederationAuditEvent.objects.unscoped("test").filter(event=AuditEvent.BAD_SIGNATURE)
    assert refusal.peer == stub_peer and refusal.message_id == message.id and refusal.reason == error["message"]


@pytest.mark.django_db(transaction=True)
@override_settings(HERMES_FEDERATION_RETRY_MAX_DELAY=60.0)
def test_a_link_disabled_on_the_receiving_side_is_retried_not_dead_lettered(
    live_server: Any, org: Any, other_org: Any
) -> None:
    """Both ends of one link in one database: `berlin` is how we send, `paris` is how the receiving side knows us.
    Disabled there for a moment, its 404 dead-lettered the message at once (a task result lost that way left the
    requester's task waiting for the gap forever); it is a 503 with Retry-After now, and delivered once enabled."""
    sending = actions.create_peer(name="berlin", base_url=live_server.url, local_name="paris")
    receiving = actions.create_peer(name="paris", base_url=live_server.url, local_name="berlin")
    for link in (sending, receiving):
        actions.add_key(link, secret=SECRET)
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    actions.set_policy(org=other_org, remote="acme@paris", effect=Effect.ALLOW)
    first = send(org, "globex@berlin")  # committed: the (eager) job delivers it, direction binding and all
    assert outbox_of(first).status == OutboxStatus.DELIVERED
    assert InboxEntry.objects.for_org(other_org).get(message_id=first.id).sender == "acme@paris"

    Peer.objects.filter(pk=receiving.pk).update(status=PeerStatus.DISABLED)
    before = timezone.now()
    message = send(org, "globex@berlin")
    row = outbox_of(message)
    assert row.status == OutboxStatus.FAILED, row.last_error
    assert row.last_error == "HTTP 503: link_disabled: The link 'paris' is disabled on this instance."
    assert row.next_attempt_at is not None and row.next_attempt_at - before >= timedelta(seconds=29)  # Retry-After
    Peer.objects.filter(pk=receiving.pk).update(status=PeerStatus.ACTIVE)
    Outbox.objects.for_org(org).filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver(row.pk) == OutboxStatus.DELIVERED
    assert InboxEntry.objects.for_org(other_org).filter(message_id=message.id).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("receipt", "why"),
    [
        (None, "the receipt is NoneType, not an object"),
        ("yes", "the receipt is str, not an object"),
        ([1, 2], "the receipt is list, not an object"),
        ({}, "the receipt is for message None, not this one"),
        ({"message_id": "OTHER", "status": "accepted"}, "the receipt is for message OTHER, not this one"),
        ({"message_id": "THIS", "status": "rejected"}, "the receipt's status is 'rejected', not 'accepted'"),
    ],
)
def test_a_signed_200_without_a_receipt_for_this_message_is_no_delivery(
    org: Any, stub_peer: Peer, stub: StubServer, receipt: Any, why: str
) -> None:
    # Each of these counted as delivered: a broken peer holding the link key made messages vanish.
    message = send(org)
    if isinstance(receipt, dict) and receipt.get("message_id") == "THIS":
        receipt = {**receipt, "message_id": str(message.id)}
    body = json.dumps({"receipt": receipt}).encode()
    stub.script.append(Reply(200, signing.sign_headers(str(message.id), body, [SECRET]), body))
    assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED  # retried: the receiver deduplicates
    row = outbox_of(message)
    assert row.last_error == f"HTTP 200: receipt rejected: {why}" and row.receipt is None


@pytest.mark.django_db
def test_the_envelope_is_utf8_not_escaped(org: Any, other_org: Any) -> None:
    # \u-escaping took an emoji 12 bytes instead of 4: a result within the limits where it was recorded could
    # make an envelope over the peer's MAX_MESSAGE_BYTES.
    message = Message.objects.create(organization=org, recipient="globex", type="message", payload={"text": "€ 😀"})
    raw = delivery.envelope(message)
    assert "€ 😀".encode() in raw and b"\\u" not in raw
    assert json.loads(raw)["payload"] == {"text": "€ 😀"}


@pytest.mark.django_db
def test_unreadable_link_keys_are_one_line_with_the_fix_and_retried(
    org: Any, stub_peer: Peer, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The link keys were stored under another SECRET_KEY: each attempt logged a traceback ending
    # "internal error: DecryptionError", which said nothing of the fix.
    message = send(org)
    with override_settings(SECRET_KEY="another-" + "x" * 50), caplog.at_level("WARNING", logger="apps.federation"):
        assert delivery.deliver(outbox_of(message).pk) == OutboxStatus.FAILED
    row = outbox_of(message)
    assert row.last_error.startswith("cannot sign: the link keys cannot be read (cannot decrypt: HERMES_FIELD_KEY")
    assert "Changing SECRET_KEY or HERMES_FIELD_KEY" in row.last_error
    assert not [record for record in caplog.records if record.exc_info]
    assert not stub.requests  # nothing went out unsigned
