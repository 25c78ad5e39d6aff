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
    msg_id, body = envelope(correlation_id="xyz")
    response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    assert (
        response.status_code == 400 and response.json()["error"]["message"] == "'correlation_id' must be a UUID or null"
    )
    # The unknown link ("rome") is not among them: see test_unauthenticated_refusals_are_not_persisted_per_request.
    assert len(events(AuditEvent.REJECTED)) == 7


@pytest.mark.django_db
def test_a_message_for_an_agent_the_org_does_not_have_is_unknown_recipient(berlin: Peer, org: Any) -> None:
    from apps.agents.models import Agent

    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    Agent.objects.create(organization=org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    msg_id, body = envelope(agent="nosuchagent")
    response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    assert response.status_code == 404, response.content
    assert response.json()["error"] == {
        "code": "unknown_recipient",
        "message": "acme has no agent 'nosuchagent'.",
        "details": {},
    }
    assert not InboxEntry.objects.for_org(org).exists()
    msg_id, body = envelope(agent="echo")
    assert post(body, signing.sign_headers(msg_id, body, [SECRET])).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("timestamp", "code", "message"),
    [
        ("1" + "0" * 309, "stale_timestamp", "timestamp is more than 1000000000000 s in the future; window ±300 s"),
        ("9" * 400, "stale_timestamp", "timestamp is more than 1000000000000 s in the future; window ±300 s"),
        ("-" + "9" * 400, "stale_timestamp", "timestamp is more than 1000000000000 s old; window ±300 s"),
        ("9" * 5000, "bad_signature", "webhook-timestamp is not an integer"),  # past int()'s digit limit
        ("12.5", "bad_signature", "webhook-timestamp is not an integer"),
    ],
)
def test_absurd_timestamps_are_401_not_500(berlin: Peer, timestamp: str, code: str, message: str) -> None:
    msg_id, body = envelope()
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": "v1,AAAA"}
    response = post(body, headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == code
    assert response.json()["error"]["message"] == message


def test_the_stale_message_states_the_skew_it_compared() -> None:
    now = 1_700_000_000.9  # a fraction of a second past the whole second, as time.time() usually is
    for skew, text in ((301, "301 s old"), (-301, "301 s in the future")):
        headers = {"webhook-id": "m", "webhook-timestamp": str(int(now) - skew), "webhook-signature": "v1,AAAA"}
        with pytest.raises(signing.SignatureError) as refused:
            signing.verify(headers, b"{}", [SECRET], tolerance=300, now=now)
        assert refused.value.reason == f"timestamp is {text}; window ±300 s"
    for skew in (300, -300):  # the window's edges are inside it
        headers = signing.sign_headers("m", b"{}", [SECRET], timestamp=int(now) - skew)
        assert signing.verify(headers, b"{}", [SECRET], tolerance=300, now=now) == ("m", int(now) - skew)


@pytest.mark.django_db
def test_unauthenticated_refusals_are_not_persisted_per_request(berlin: Peer, org: Any) -> None:
    from apps.core.metrics import FEDERATION_INBOUND

    refused = FEDERATION_INBOUND.labels(decision="bad_signature")._value.get()
    unknown = FEDERATION_INBOUND.labels(decision="rejected")._value.get()
    for i in range(20):
        msg_id, body = envelope()
        assert post(body, signing.sign_headers(msg_id, body, [SECRET]), url=f"{URL[:-6]}x{i}").status_code == 404
        assert post(body, signing.sign_headers(msg_id, body, [b"x" * 32])).status_code == 401
    # Every refusal is counted ...
    assert FEDERATION_INBOUND.labels(decision="bad_signature")._value.get() == refused + 20
    assert FEDERATION_INBOUND.labels(decision="rejected")._value.get() == unknown + 20
    # ... but a link name we do not have writes nothing, and a known link's bad signatures one row a minute.
    assert events(AuditEvent.REJECTED) == []
    (sampled,) = events(AuditEvent.BAD_SIGNATURE)
    assert sampled.peer == berlin and "first of this minute" in sampled.detail["sampled"]
    stale_id, stale = envelope()
    post(stale, signing.sign_headers(stale_id, stale, [SECRET], timestamp=int(time.time()) - 999))
    assert len(events(AuditEvent.STALE_TIMESTAMP)) == 1  # another reason has its own allowance


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_get_the_json_error_shape(berlin: Peer, method: str) -> None:
    response = getattr(Client(), method)(URL)
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert response["Allow"] == "POST" and response.json()["error"]["code"] == "method_not_allowed"


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
def test_federation_peer_command_names_what_it_refuses_and_what_is_empty(settings: Any) -> None:
    out = io.StringIO()
    call_command("federation_peer", "list", stdout=out)
    assert out.getvalue().startswith("No peers configured. Add one: manage.py federation_peer add")
    # Addresses are lower-cased, so `Gamma` could be added but never addressed.
    with pytest.raises(CommandError, match=r"name: .*e\.g\. 'gamma'"):
        call_command("federation_peer", "add", "Gamma", "http://127.0.0.1:9", "--local-name", "bravo")
    with pytest.raises(CommandError, match=r"base_url: Refusing to connect to 169\.254\.169\.254 .*cloud metadata"):
        call_command("federation_peer", "add", "imds", "http://169.254.169.254", "--local-name", "bravo")
    assert not Peer.objects.exists()
    # A private address depends on the allowlist (which may be about to change): added, with a warning.
    settings.HERMES_SSRF_ALLOWLIST = []
    err = io.StringIO()
    call_command("federation_peer", "add", "lan", "http://10.0.0.7", "--local-name", "bravo", stdout=out, stderr=err)
    assert Peer.objects.filter(name="lan").exists()
    assert "deliveries to this peer will be refused: Refusing to connect to 10.0.0.7" in err.getvalue()


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


@pytest.mark.django_db
def test_a_disabled_link_answers_503_with_retry_after_and_an_unknown_one_404(
    berlin: Peer, org: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A 404 made the sender dead-letter at once, so whatever was sent during a short disable was lost."""
    from apps.core.metrics import FEDERATION_INBOUND

    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    actions.set_peer_status(berlin, "disabled")
    refused = FEDERATION_INBOUND.labels(decision="rejected")._value.get()
    msg_id, body = envelope()
    with caplog.at_level("INFO", logger="hermes.request"):
        response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    # A refusal the operator chose, with a time to come back: a warning, not an ERROR line per retried message.
    (line,) = [r for r in caplog.records if r.name == "hermes.request"]
    assert line.levelname == "WARNING" and line.status == 503  # type: ignore[attr-defined]
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert response.json()["error"] == {
        "code": "link_disabled",
        "message": "The link 'berlin' is disabled on this instance.",
        "details": {},
    }
    assert not InboxEntry.objects.for_org(org).exists()
    # Refused before the signature is read, like an unknown link: counted, logged, and sampled into the audit log.
    assert FEDERATION_INBOUND.labels(decision="rejected")._value.get() == refused + 1
    (sampled,) = events(AuditEvent.REJECTED)
    assert sampled.peer == berlin and sampled.reason == "the link 'berlin' is disabled on this instance"
    unknown = post(body, signing.sign_headers(msg_id, body, [SECRET]), url="/api/v1/federation/receive/rome")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_peer"
    assert unknown.json()["error"]["message"] == "This instance has no link named 'rome'."
    actions.set_peer_status(berlin, "active")
    assert post(body, signing.sign_headers(msg_id, body, [SECRET])).status_code == 200  # the sender's retry


@pytest.mark.django_db
def test_a_signed_direction_binding_must_match_the_link(berlin: Peer, org: Any) -> None:
    """berlin signs {"from": <our name for it>, "to": <its name for us>}. A message *we* sent to berlin carries
    the reverse, and verifies with the same (symmetric) key: it must not pass for one berlin sent."""
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)

    def deliver(link: Any) -> Any:
        msg_id, body = envelope(link=link)
        return post(body, signing.sign_headers(msg_id, body, [SECRET]))

    assert deliver({"from": "berlin", "to": "paris"}).status_code == 200
    reflected = deliver({"from": "paris", "to": "berlin"})
    assert reflected.status_code == 401 and reflected.json()["error"]["code"] == "wrong_link"
    assert "it is one this instance sent to 'berlin', posted back to it" in reflected.json()["error"]["message"]
    misnamed = deliver({"from": "berlin", "to": "paris-eu"})
    assert misnamed.status_code == 401 and misnamed.json()["error"]["message"] == (
        "the message is bound to the link from 'berlin' to 'paris-eu', but this link is from 'berlin' to 'paris': "
        "the two sides name the link differently (compare name and local_name on both)"
    )
    # Only the two names are compared: a later Hermes may add to the binding.
    assert deliver({"from": "berlin", "to": "paris", "since": 2}).status_code == 200
    for junk in (None, "berlin", {"from": "berlin"}, {"from": "berlin", "to": 7}):
        response = deliver(junk)  # anything that carries the binding must carry the right one
        assert response.status_code == 401 and "in a form this instance does not understand" in response.text
    # Audited per message, like every refusal after the signature proved the sender.
    assert len(events(AuditEvent.BAD_SIGNATURE)) == 6
    assert InboxEntry.objects.for_org(org).count() == 2
    # A Hermes older than the binding sends none: still accepted.
    msg_id, body = envelope()
    assert post(body, signing.sign_headers(msg_id, body, [SECRET])).status_code == 200


@pytest.mark.django_db
def test_replays_do_not_spend_the_links_budget_and_are_audited_once_a_minute(
    berlin: Peer, org: Any, settings: Any
) -> None:
    # A captured request replayed within the tolerance used up the peer's budget (its own next message got 429)
    # and wrote an audit row per replay.
    settings.HERMES_FEDERATION_INBOUND_PER_MINUTE = 2
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    headers = signing.sign_headers(msg_id, body, [SECRET])
    first = post(body, headers)
    for _ in range(5):
        replay = post(body, headers)
        assert replay.status_code == 200 and json.loads(replay.content)["duplicate"] is True
        assert json.loads(replay.content)["receipt"] == json.loads(first.content)["receipt"]
        proof = {k: replay[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        Webhook(signing.encode_secret(SECRET)).verify(replay.content, proof)  # still the peer's signed receipt
    fresh_id, fresh = envelope()
    fresh_headers = signing.sign_headers(fresh_id, fresh, [SECRET])
    assert post(fresh, fresh_headers).status_code == 200
    assert [row.message_id for row in events(AuditEvent.DUPLICATE)] == [uuid.UUID(msg_id)]
    assert not events(AuditEvent.RATE_LIMITED)
    # Sampled per message: another message's retry is on record too.
    assert post(fresh, fresh_headers).status_code == 200
    assert {row.message_id for row in events(AuditEvent.DUPLICATE)} == {uuid.UUID(msg_id), uuid.UUID(fresh_id)}


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_that_is_not_typed_json_is_415(berlin: Peer, org: Any, content_type: str) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signing.sign_headers(msg_id, body, [SECRET]).items()
    }
    response = Client().post(URL, body, content_type=content_type, **headers)
    assert response.status_code == 415
    assert json.loads(response.content)["error"]["code"] == "unsupported_media_type"
    assert not InboxEntry.objects.for_org(org).exists()


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_a_body_past_djangos_own_upload_limit_is_the_documented_413(berlin: Peer, org: Any) -> None:
    # It was Django's RequestDataTooBig: a 400 technical page with DEBUG on, `request_too_large` without.
    body = b'{"pad": "' + b"x" * 5_300_000 + b'"}'
    response = post(body, signing.sign_headers(str(uuid.uuid4()), body, [SECRET]))
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == "too_large"


@pytest.mark.django_db
def test_link_keys_this_instance_cannot_read_are_a_retryable_503(berlin: Peer, org: Any) -> None:
    # It was a 500 (an unhandled DecryptionError): ours to fix, and the peer's message must wait, not be lost.
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    msg_id, body = envelope()
    with override_settings(SECRET_KEY="another-" + "x" * 50):
        response = post(body, signing.sign_headers(msg_id, body, [SECRET]))
    assert response.status_code == 503 and response["Retry-After"] == "60"
    assert json.loads(response.content)["error"]["code"] == "link_keys_unreadable"
    assert not InboxEntry.objects.for_org(org).exists()
