"""What federation refuses, and how it says so: a retired link secret added again, a peer URL no delivery can use,
wire addresses that are not slugs, unstorable JSON and bad timestamps in a signed envelope, a requeued dead
letter's stale error, and the policy messages (patterns, unknown peers, long input)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext

from apps.core.errors import Conflict
from apps.federation import actions, delivery, signing
from apps.federation.admin import OutboxAdmin, PolicyAdmin
from apps.federation.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Effect,
    InboxEntry,
    KeyState,
    LinkKey,
    Outbox,
    OutboxStatus,
    Peer,
    Policy,
)
from tests.factories import dead_letter

API = "/api/v1/federation"
K1 = b"k1" * 16
INBOX = "/api/v1/federation/receive/bravo"


@pytest.fixture
def bravo(db: Any) -> Peer:
    """The peer that sends to us; it calls us `alpha`. Its k1 was rotated out and retired."""
    peer = actions.create_peer(name="bravo", base_url="http://127.0.0.1:9", local_name="alpha")
    actions.add_key(peer, secret=K1)
    return peer


def _rotate_k1_out(peer: Peer) -> None:
    actions.add_key(peer, secret=b"k2" * 16)
    actions.promote_key(peer)
    actions.retire_key(peer)


def _post(body: bytes, msg_id: str, secret: bytes = K1) -> Any:
    headers = signing.sign_headers(msg_id, body, [secret])
    return Client().post(
        INBOX,
        body,
        content_type="application/json",
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()},
    )


def _envelope(**changes: Any) -> tuple[str, bytes]:
    msg_id = str(uuid.uuid4())
    body = {
        "id": msg_id,
        "type": "message",
        "sender": {"org": "globex", "agent": None},
        "recipient": {"org": "acme", "agent": None},
        "payload": {"text": "hello"},
        "correlation_id": None,
        "created_at": "2026-11-27T15:34:18.123456+00:00",
        **changes,
    }
    return msg_id, json.dumps(body).encode()


# --- 1. A retired secret is never trusted again ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retired_secret_cannot_be_added_again_by_the_api_or_the_command(
    client_for: Any, alice: Any, org: Any, bravo: Peer
) -> None:
    actions.set_policy(org=org, remote="*@bravo", effect=Effect.ALLOW)
    _rotate_k1_out(bravo)
    retired = LinkKey.objects.get(peer=bravo, version=1)
    alice.is_staff = True
    alice.save()
    refused = client_for(alice).post(f"{API}/peers/bravo/keys", {"secret": signing.encode_secret(K1)}, format="json")
    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "key_retired"
    assert error["message"].startswith(
        f"This secret is that of k1 of bravo, retired on {retired.retired_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert error["details"]["version"] == 1 and error["details"]["retired_at"] == retired.retired_at.isoformat()
    with pytest.raises(CommandError, match="This secret is that of k1 of bravo, retired on"):
        call_command("federation_keys", "add", "bravo", "--secret", signing.encode_secret(K1), stdout=io.StringIO())
    assert list(LinkKey.objects.filter(peer=bravo).values_list("version", "state")) == [
        (2, KeyState.CURRENT),
        (1, KeyState.RETIRED),
    ]
    msg_id, body = _envelope()
    assert _post(body, msg_id).status_code == 401  # k1 still verifies nothing


@pytest.mark.django_db
def test_a_live_keys_secret_cannot_be_added_as_the_next_key(bravo: Peer) -> None:
    with pytest.raises(Conflict, match=r"already k1 of bravo \(current") as refused:
        actions.add_key(bravo, secret=K1)
    assert refused.value.error_code == "key_exists"
    assert LinkKey.objects.filter(peer=bravo).count() == 1


# --- 2. A peer URL no delivery could use --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_base_url_the_http_client_cannot_parse_is_refused_every_way(client_for: Any, alice: Any, org: Any) -> None:
    alice.is_staff = True
    alice.save()
    url = "http://0251.0376.0251.0376/"
    refused = client_for(alice).post(
        f"{API}/peers", {"name": "ssrf6", "base_url": url, "local_name": "alpha"}, format="json"
    )
    assert refused.status_code == 400, refused.content
    (reason,) = refused.json()["error"]["details"]["base_url"]
    assert reason.startswith(f"Not a valid URL: '{url}' (Invalid IPv4 address: '0251.0376.0251.0376').")
    with pytest.raises(CommandError, match=r"base_url: Not a valid URL.*Invalid IPv4 address"):
        call_command("federation_peer", "add", "ssrf6", url, "--local-name", "alpha", stdout=io.StringIO())
    assert not Peer.objects.filter(name="ssrf6").exists()
    # The admin (and its edit of base_url) validates with the model's rules.
    peer = actions.create_peer(name="bravo", base_url="http://127.0.0.1:9", local_name="alpha")
    with pytest.raises(Exception, match="Invalid IPv4 address"):
        actions.set_peer_base_url(peer, url)


@pytest.mark.django_db
def test_an_unparsable_base_url_dead_letters_at_once_without_a_traceback(
    org: Any, bravo: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    actions.set_policy(org=org, remote="*@bravo", effect=Effect.ALLOW)
    message = actions.send_message(org=org, recipient="globex@bravo", payload={"n": 1})
    # Saved before peers were checked for it.
    Peer.objects.filter(pk=bravo.pk).update(base_url="http://0251.0376.0251.0376")
    row = Outbox.objects.for_org(org).get(message=message)
    with caplog.at_level(logging.ERROR, logger="apps.federation.delivery"):
        assert delivery.deliver(row.pk) == OutboxStatus.DEAD
    assert not [r for r in caplog.records if r.exc_info]
    row.refresh_from_db()
    assert row.attempts == 1
    assert row.last_error == (
        "the peer's base_url is not a valid URL (Invalid IPv4 address: '0251.0376.0251.0376'): correct it, then requeue"
    )
    (attempt,) = DeliveryAttempt.objects.for_org(org).filter(outbox=row)
    assert attempt.outcome == AttemptOutcome.PERMANENT


# --- 3, 4, 6. What a signed envelope may hold ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("recipient", {"org": "demo-echo.acme", "agent": None}, "'recipient.org' must be a slug"),
        ("recipient", {"org": "acme@alpha", "agent": None}, "'recipient.org' must be a slug"),
        ("recipient", {"org": "acme", "agent": "x.y"}, "'recipient.agent' must be a slug"),
        ("sender", {"org": "x@y", "agent": None}, "'sender.org' must be a slug"),
        ("sender", {"org": "", "agent": None}, "'sender.org' must be a slug"),
    ],
)
def test_wire_org_and_agent_are_slugs_not_addresses(
    bravo: Peer, org: Any, field: str, value: dict[str, Any], message: str
) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = _envelope(**{field: value})
    response = _post(body, msg_id)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    sent = value["agent"] if "agent" in message else value["org"]
    assert error["code"] == "invalid_message"
    assert error["message"] == f"{message} (lower-case letters, digits, '-' and '_'), not {sent!r}"
    assert not InboxEntry.objects.for_org(org).exists()


@pytest.mark.django_db
def test_a_long_wire_org_is_not_echoed_in_full(bravo: Peer, org: Any) -> None:
    msg_id, body = _envelope(recipient={"org": "a" * 5000, "agent": None})
    error = _post(body, msg_id).json()["error"]["message"]
    assert error == f"'recipient.org' must be a slug (lower-case letters, digits, '-' and '_'), not {'a' * 60 + '…'!r}"


@pytest.mark.django_db
def test_a_nul_in_a_signed_payload_is_named_not_called_not_json(bravo: Peer, org: Any) -> None:
    msg_id, body = _envelope(payload={"a": "\u0000"})
    response = _post(body, msg_id)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_json",
        "message": "The string at $.payload.a holds a NUL character (\\u0000), which cannot be stored.",
        "details": {},
    }
    assert _post(b"not json", msg_id).json()["error"]["message"] == "The body is not JSON."


@pytest.mark.django_db
@pytest.mark.parametrize("created_at", ["yesterday", None, 17, "2026-13-01T00:00:00Z"])
def test_created_at_must_be_a_timestamp(bravo: Peer, org: Any, created_at: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = _envelope(created_at=created_at)
    response = _post(body, msg_id)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_message"
    assert response.json()["error"]["message"] == "'created_at' must be an ISO-8601 timestamp"
    msg_id, body = _envelope()
    assert _post(body, msg_id).status_code == 200


# --- 5. A requeued dead letter starts with no error ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_requeued_dead_letter_no_longer_shows_the_previous_rounds_error(
    client_for: Any, alice: Any, org: Any, bravo: Peer
) -> None:
    actions.set_policy(org=org, remote="*@bravo", effect=Effect.ALLOW)
    message = actions.send_message(org=org, recipient="globex@bravo", payload={"n": 1})
    row = dead_letter(message, error="HTTP 401: stale_timestamp: timestamp is 400 s in the past")
    api = client_for(alice)
    assert api.post(f"{API}/dlq/{message.id}/requeue", {}, format="json").status_code == 200
    shown = api.get(f"{API}/messages/{message.id}").json()["delivery"]
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("pending", 0, "")
    row.refresh_from_db()
    assert row.last_error == ""
    # The previous round stays on record in its attempt log.
    assert DeliveryAttempt.objects.for_org(org).filter(outbox=row).count() == 1


@pytest.mark.django_db
def test_the_admin_requeues_the_dead_letters_of_a_selection_and_says_how_many(
    admin_user: Any, org: Any, bravo: Peer
) -> None:
    actions.set_policy(org=org, remote="*@bravo", effect=Effect.ALLOW)
    dead = dead_letter(actions.send_message(org=org, recipient="globex@bravo", payload={"n": 1}))
    actions.send_message(org=org, recipient="globex@bravo", payload={"n": 2})  # pending: skipped
    request = RequestFactory().post("/admin/")
    request.user = admin_user
    said: list[str] = []
    outbox_admin = OutboxAdmin(Outbox, site)
    outbox_admin.message_user = lambda request, message, level=None: said.append(message)  # type: ignore[method-assign,assignment]
    outbox_admin.requeue_selected(request, Outbox.objects.for_org(org).all())
    assert said == ["Requeued 1 of 2 (only dead letters move)."]
    dead.refresh_from_db()
    assert dead.status == OutboxStatus.PENDING and dead.last_error == ""


# --- 7. Policy messages -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_bad_policy_pattern_names_the_wildcard_forms_and_is_cut_short(client_for: Any, alice: Any, org: Any) -> None:
    api = client_for(alice)
    refused = api.post(f"{API}/policies", {"remote": "*@", "effect": "allow"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "'*@' is not a policy's remote side: use * (everyone), *@peer (everyone on a peer), org, agent.org, "
        "org@peer or agent.org@peer (lower-case slugs)."
    )
    refused = api.post(f"{API}/contacts", {"name": "Long", "address": "a" * 200}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith(f"{'a' * 60 + '…'!r} is not a federation address")


@pytest.mark.django_db
def test_a_rule_for_a_peer_that_does_not_exist_is_saved_with_a_warning(
    client_for: Any, alice: Any, org: Any, bravo: Peer
) -> None:
    api = client_for(alice)
    saved = api.post(f"{API}/policies", {"remote": "*@nosuchpeer", "effect": "allow"}, format="json")
    assert saved.status_code == 201
    assert saved.json()["remote_warning"] == (
        "No peer named 'nosuchpeer' is configured on this instance: the rule matches nothing until one is added."
    )
    for remote in ("*@bravo", "globex@bravo", "*", "acme"):
        known = api.post(f"{API}/policies", {"remote": remote, "effect": "allow"}, format="json")
        assert known.status_code == 201 and known.json()["remote_warning"] is None, remote
    with CaptureQueriesContext(connection) as five_rules:
        listed = {rule["remote"]: rule["remote_warning"] for rule in api.get(f"{API}/policies").json()["results"]}
    assert listed["*@nosuchpeer"] is not None and listed["globex@bravo"] is None
    # The peers are read once per list, not once per rule that names one.
    for remote in ("*@rome", "globex@rome", "echo.globex@oslo"):
        actions.set_policy(org=org, remote=remote, effect=Effect.DENY)
    with CaptureQueriesContext(connection) as eight_rules:
        assert len(api.get(f"{API}/policies").json()["results"]) == 8
    assert len(eight_rules) == len(five_rules)


@pytest.mark.django_db
def test_the_console_and_the_admin_say_a_rules_peer_does_not_exist(alice: Any, admin_user: Any, org: Any) -> None:
    console = Client()
    console.force_login(alice)
    saved = console.post("/federation/policies/", {"remote": "*@nosuchpeer", "effect": "allow"})
    assert saved.status_code in (200, 302)
    said = [str(m) for m in get_messages(saved.wsgi_request)]
    assert said == [
        "Rule saved: allow * <-> *@nosuchpeer. No peer named 'nosuchpeer' is configured on this instance: the rule "
        "matches nothing until one is added."
    ]
    request = RequestFactory().post("/admin/")
    request.user = admin_user
    request.session = {}  # type: ignore[assignment]
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    rule = Policy(organization=org, remote="globex@rome", effect=Effect.DENY)
    PolicyAdmin(Policy, site).save_model(request, rule, form=None, change=False)
    assert [str(m) for m in get_messages(request)] == [
        "No peer named 'rome' is configured on this instance: the rule matches nothing until one is added."
    ]
