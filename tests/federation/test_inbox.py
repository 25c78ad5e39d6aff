"""The receiving side over HTTP (Django test client): signatures, the replay window, dedup, policy, receipts,
and key rotation with its audit trail."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from standardwebhooks import Webhook

from apps.core.errors import Conflict
from apps.federation import actions, signing
from apps.federation.models import AuditEvent, Effect, FederationAuditEvent, InboxEntry, KeyState, LinkKey, Peer
from apps.federation.selectors import live_secrets

SECRET = b"k1" * 16
URL = "/api/v1/federation/receive/berlin"


@pytest.fixture
def berlin(db: Any) -> Peer:
    """The peer that sends to us; it calls us `paris`."""
    peer = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(peer, secret=SECRET)
    return peer


def envelope(recipient: str = "acme", agent: str | None = None, **extra: Any) -> tuple[str, bytes]:
    msg_id = str(uuid.uuid4())
    body = {
        "id": msg_id,
        "type": "message",
        "sender": {"org": "globex", "agent": None},
        "recipient": {"org": recipient, "agent": agent},
        "payload": {"text": "hello"},
        "correlation_id": None,
        **extra,
    }
    return msg_id, json.dumps(body).encode()


def post(body: bytes, headers: dict[str, str], url: str = URL) -> Any:
    return Client().post(
        url,
        body,
        content_type="application/json",
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()},
    )


def events(kind: str) -> list[FederationAuditEvent]:
    return list(FederationAuditEvent.objects.unscoped("test").filter(event=kind))


@pytest.mark.django_db
def test_accepts_signed_message_and_signs_the_receipt(berlin: Peer, org: Any) -> None:
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    msg_id, body = envelope()
    response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    assert response.status_code == 200, response.content
    # The receipt verifies with any Standard Webhooks library, keyed by the link secret, for this message id.
    headers = {k: response[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    receipt = Webhook(signing.encode_secret(SECRET)).verify(response.content, headers)
    assert receipt["receipt"]["message_id"] == msg_id and receipt["receipt"]["status"] == "accepted"
    assert headers["webhook-id"] == msg_id
    entry = InboxEntry.objects.for_org(org).get(message_id=msg_id)
    assert entry.sender == "globex@berlin" and entry.payload == {"text": "hello"}
    assert [e.message_id for e in events(AuditEvent.ACCEPTED)] == [uuid.UUID(msg_id)]


@pytest.mark.django_db
def test_replay_inside_window_gets_the_original_receipt(berlin: Peer, org: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    headers = signing.sign_headers(msg_id, body, [SECRET])
    first = post(body, headers)
    replay = post(body, headers)  # byte-for-byte the same request
    assert replay.status_code == 200
    assert json.loads(replay.content)["receipt"] == json.loads(first.content)["receipt"]
    assert json.loads(replay.content)["duplicate"] is True
    assert InboxEntry.objects.for_org(org).filter(message_id=msg_id).count() == 1
    assert len(events(AuditEvent.DUPLICATE)) == 1


@pytest.mark.django_db
def test_stale_and_bad_signatures_are_rejected_and_audited(berlin: Peer, org: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    stale = signing.sign_headers(msg_id, body, [SECRET], timestamp=int(time.time()) - 301)
    response = post(body, stale)
    assert response.status_code == 401 and response.json()["error"]["code"] == "stale_timestamp"
    forged = signing.sign_headers(msg_id, body, [b"x" * 32])
    response = post(body, forged)
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_signature"
    assert not InboxEntry.objects.for_org(org).exists()
    assert [e.message_id for e in events(AuditEvent.STALE_TIMESTAMP)] == [uuid.UUID(msg_id)]
    assert [e.reason for e in events(AuditEvent.BAD_SIGNATURE)] == ["no v1 signature matches a live link key"]
    with override_settings(HERMES_FEDERATION_TOLERANCE=600):
        assert post(body, stale).status_code == 200  # the window is configurable


@pytest.mark.django_db
def test_rejections_unknown_peer_recipient_policy_and_malformed(berlin: Peer, org: Any) -> None:
    msg_id, body = envelope()
    headers = signing.sign_headers(msg_id, body, [SECRET])
    assert post(body, headers, url="/api/v1/federation/receive/rome").status_code == 404
    denied = post(body, headers)  # no policy: the instance default denies
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    assert events(AuditEvent.POLICY_DENIED)[0].organization == org
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope(recipient="nobody")
    response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_recipient"
    for bad in (b"not json", json.dumps({"id": "x"}).encode(), json.dumps([1]).encode()):
        assert post(bad, signing.sign_headers(msg_id, bad, [SECRET])).status_code == 400
    _, other = envelope()  # the body's id must be the signed webhook-id
    assert post(other, signing.sign_headers(msg_id, other, [SECRET])).status_code == 400
    msg_id, body = envelope(type="telegram")
    assert post(body, signing.sign_headers(msg_id, body, [SECRET])).status_code == 400
    assert len(events(AuditEvent.REJECTED)) == 7


@pytest.mark.django_db
def test_unsigned_is_refused_unless_hmac_is_off(berlin: Peer, org: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    unsigned = {"webhook-id": msg_id, "webhook-timestamp": str(int(time.time()))}
    assert post(body, unsigned).status_code == 401
    with override_settings(HERMES_FEDERATION_HMAC=False):  # dev only (config refuses it elsewhere)
        assert post(body, unsigned).status_code == 200


@pytest.mark.django_db
def test_key_rotation_lifecycle(berlin: Peer, org: Any) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    k2 = b"k2" * 16

    def accepted(secret: bytes) -> int:
        msg_id, body = envelope()
        return post(body, signing.sign_headers(msg_id, body, [secret])).status_code

    actions.add_key(berlin, secret=k2)
    assert [k.state for k in LinkKey.objects.filter(peer=berlin).order_by("version")] == ["current", "next"]
    assert len(live_secrets(berlin)) == 2
    assert accepted(SECRET) == 200 and accepted(k2) == 200  # during rotation either key verifies
    with pytest.raises(Conflict):
        actions.add_key(berlin)
    actions.promote_key(berlin)
    assert live_secrets(berlin)[0] == k2
    with pytest.raises(Conflict):
        actions.promote_key(berlin)
    with pytest.raises(Conflict):
        actions.retire_key(berlin, version=2)  # the current key cannot be retired
    actions.retire_key(berlin)
    assert accepted(SECRET) == 401  # a retired key no longer verifies
    assert accepted(k2) == 200
    with pytest.raises(Conflict):
        actions.retire_key(berlin)
    kinds = [e.event for e in FederationAuditEvent.objects.unscoped("test").filter(peer=berlin).order_by("pk")]
    assert kinds.count("key_added") == 2 and "key_promoted" in kinds and "key_retired" in kinds


@pytest.mark.django_db
def test_federation_keys_command(berlin: Peer) -> None:
    out = io.StringIO()
    call_command("federation_keys", "add", "berlin", stdout=out)
    text = out.getvalue()
    assert "added k2 (next)" in text and "secret (shown once" in text
    secret = text.split("shown once; give it to the operator of 'berlin'): ")[1].split()[0]
    assert LinkKey.objects.get(peer=berlin, version=2).secret() == signing.decode_secret(secret)
    call_command("federation_keys", "promote", "berlin", stdout=out)
    call_command("federation_keys", "retire", "berlin", stdout=out)
    assert LinkKey.objects.get(peer=berlin, version=1).state == KeyState.RETIRED
    given = signing.encode_secret(b"z" * 32)
    call_command("federation_keys", "add", "berlin", "--secret", given, stdout=out)
    call_command("federation_keys", "retire", "berlin", "--key-version", "3", stdout=out)
    call_command("federation_keys", "list", "berlin", stdout=out)
    assert "k3   retired" in out.getvalue()
    with pytest.raises(CommandError, match="No peer"):
        call_command("federation_keys", "list", "rome")
    with pytest.raises(CommandError, match="no previous key"):
        call_command("federation_keys", "retire", "berlin")
    with pytest.raises(CommandError, match="whsec_"):
        call_command("federation_keys", "add", "berlin", "--secret", "nope!")


@pytest.mark.django_db
def test_federation_peer_command() -> None:
    out = io.StringIO()
    call_command("federation_peer", "add", "rome", "http://127.0.0.1:1/", "--local-name", "paris", stdout=out)
    call_command("federation_peer", "disable", "rome", stdout=out)
    assert "rome                 disabled  http://127.0.0.1:1" in out.getvalue()
    call_command("federation_peer", "enable", "rome", stdout=io.StringIO())
    for args in (("add", "rome", "http://x", "--local-name", "p"), ("add", "x"), ("enable",), ("enable", "nope")):
        with pytest.raises(CommandError):
            call_command("federation_peer", *args, stdout=io.StringIO())


@pytest.mark.django_db
def test_a_peer_over_its_rate_limit_gets_429_with_retry_after(berlin: Peer, org: Any, settings: Any) -> None:
    settings.HERMES_FEDERATION_INBOUND_PER_MINUTE = 2
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    forged_id, forged = envelope()
    bad = post(forged, signing.sign_headers(forged_id, forged, [b"x" * 32]))
    assert bad.status_code == 401  # refused before counting: a forger cannot spend the peer's budget
    statuses = []
    for _ in range(3):
        msg_id, body = envelope()
        response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert json.loads(response.content)["error"]["code"] == "rate_limited"
    assert not InboxEntry.objects.for_org(org).filter(message_id=msg_id).exists()  # the sender retries it later
    (limited,) = events(AuditEvent.RATE_LIMITED)
    assert limited.message_id == uuid.UUID(msg_id) and "2 messages per minute from berlin" in limited.reason
