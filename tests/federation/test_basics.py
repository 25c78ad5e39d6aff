"""Addresses, encryption at rest, signatures and policy decisions."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from standardwebhooks import Webhook, WebhookVerificationError

from apps.core import crypto
from apps.core.metrics import FEDERATION_POLICY, FEDERATION_POLICY_CACHE
from apps.federation import actions, policy, signing
from apps.federation.addresses import Address, InvalidAddress, pattern_specificity, validate_pattern
from apps.federation.models import Effect, LinkKey


def test_address_format_round_trips() -> None:
    assert Address.parse("acme") == Address("acme")
    assert Address.parse("echo.acme") == Address("acme", agent="echo")
    assert Address.parse("Globex@Berlin") == Address("globex", peer="berlin")
    assert str(Address.parse("sum.globex@berlin")) == "sum.globex@berlin"
    assert Address.from_wire({"org": "acme", "agent": "echo"}, "paris") == Address("acme", "echo", "paris")
    for bad in ("", "a.b.c", "acme@", "@berlin", "ac me", "acme@berlin@x", "-acme"):
        with pytest.raises(InvalidAddress):
            Address.parse(bad)
    for wire in ("acme", {"org": "acme", "agent": 123}, {"org": 7}):
        with pytest.raises(InvalidAddress):  # {"agent": 123} was read as the slug "123"
            Address.from_wire(wire, None)


def test_policy_patterns_rank_by_specificity() -> None:
    remote = Address("globex", agent="sum", peer="berlin")
    assert pattern_specificity("*", remote) == 0
    assert pattern_specificity("*@berlin", remote) == 1
    assert pattern_specificity("*@rome", remote) is None
    assert pattern_specificity("globex@berlin", remote) == 2
    assert pattern_specificity("sum.globex@berlin", remote) == 3
    assert pattern_specificity("echo.globex@berlin", remote) is None
    assert pattern_specificity("globex", remote) is None  # a local org is not the berlin one
    assert validate_pattern(" *@Berlin ") == "*@berlin"
    with pytest.raises(InvalidAddress):
        validate_pattern("**")


def test_crypto_round_trip_and_field_key_rotation() -> None:
    with override_settings(HERMES_FIELD_KEY="old-key-material-0123456789"):
        token = crypto.encrypt(b"s3cret")
        assert b"s3cret" not in token.encode()
        assert crypto.decrypt(token) == b"s3cret"
    with override_settings(HERMES_FIELD_KEY="new-key-material-abcdefghij,old-key-material-0123456789"):
        assert crypto.decrypt(token) == b"s3cret"  # the old key still decrypts during a field-key rotation
    with override_settings(HERMES_FIELD_KEY="unrelated"), pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token)
    fernet_key = base64.urlsafe_b64encode(b"x" * 32).decode()
    with override_settings(HERMES_FIELD_KEY=fernet_key):
        assert crypto.decrypt(crypto.encrypt(b"v")) == b"v"


@pytest.mark.django_db
def test_link_secrets_are_encrypted_at_rest(peer: Any) -> None:
    key = LinkKey.objects.get(peer=peer)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted FROM federation_linkkey WHERE id = %s", [key.pk])
        stored = cursor.fetchone()[0]
    secret = b"k1" * 16
    assert secret.decode() not in stored and base64.b64encode(secret).decode() not in stored
    assert key.secret() == secret
    assert key.fingerprint == LinkKey.fingerprint_of(secret)


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    k1, k2 = b"a" * 32, b"b" * 32
    body = b'{"hello":"world"}'
    headers = signing.sign_headers("msg_1", body, [k1, k2])
    assert headers["webhook-signature"].count("v1,") == 2
    # Either key alone verifies (rotation), through an independent Standard Webhooks implementation.
    for key in (k1, k2):
        assert Webhook(signing.encode_secret(key)).verify(body, headers) == {"hello": "world"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.encode_secret(b"c" * 32)).verify(body, headers)
    # And our verifier agrees with theirs on a signature they produced.
    ts = int(time.time())
    theirs = Webhook(signing.encode_secret(k1)).sign("msg_2", datetime.fromtimestamp(ts, tz=UTC), body.decode())
    hdrs = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": theirs}
    assert signing.verify(hdrs, body, [k1], tolerance=300) == ("msg_2", ts)


def test_verify_rejects_stale_tampered_and_unsigned() -> None:
    key = b"a" * 32
    body = b"{}"
    old = signing.sign_headers("m", body, [key], timestamp=int(time.time()) - 301)
    with pytest.raises(signing.SignatureError) as stale:
        signing.verify(old, body, [key], tolerance=300)
    assert stale.value.code == "stale_timestamp"
    future = signing.sign_headers("m", body, [key], timestamp=int(time.time()) + 400)
    with pytest.raises(signing.SignatureError, match="future"):
        signing.verify(future, body, [key], tolerance=300)
    good = signing.sign_headers("m", body, [key])
    for broken in (
        {**good, "webhook-signature": "v1,AAAA"},
        {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]},
        {**good, "webhook-signature": "v1,not-base64!"},
        {**good, "webhook-timestamp": "soon"},
        {k: v for k, v in good.items() if k != "webhook-signature"},
    ):
        with pytest.raises(signing.SignatureError) as bad:
            signing.verify(broken, body, [key], tolerance=300)
        assert bad.value.code == "bad_signature"
    with pytest.raises(signing.SignatureError):
        signing.verify(good, b"{ }", [key], tolerance=300)  # body changed
    assert signing.decode_secret(signing.encode_secret(key)) == key
    with pytest.raises(ValueError):
        signing.decode_secret("whsec_c2hvcnQ=")
    with pytest.raises(ValueError):
        signing.decode_secret("whsec_***")


def _count(metric: Any, **labels: str) -> float:
    return metric.labels(**labels)._value.get()


@pytest.mark.django_db
def test_policy_default_rules_ties_and_cache(org: Any) -> None:
    from apps.agents.models import Agent

    Agent.objects.create(organization=org, name="Echo", slug="echo", url="http://127.0.0.1:9/")  # for its own rules
    remote = Address("globex", agent="sum", peer="berlin")
    assert not policy.decide(org.pk, "", remote).allowed  # instance default: deny
    with override_settings(HERMES_FEDERATION_DEFAULT_POLICY="allow"):
        policy.clear_cache()
        assert policy.decide(org.pk, "", remote).allowed
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    policy.clear_cache()
    assert policy.decide(org.pk, "", remote).allowed
    actions.set_policy(org=org, remote="globex@berlin", effect=Effect.DENY, reason="competitor")
    policy.clear_cache()
    denied = policy.decide(org.pk, "", remote)
    assert not denied.allowed and "competitor" in denied.reason
    # agent -> agent beats org -> org, whatever the remote specificity.
    actions.set_policy(org=org, local_agent="echo", remote="*", effect=Effect.ALLOW)
    policy.clear_cache()
    assert policy.decide(org.pk, "echo", remote).allowed
    assert not policy.decide(org.pk, "other", remote).allowed
    # Cache: the second identical question is a hit; a policy change in this process clears it.
    hits, misses = _count(FEDERATION_POLICY_CACHE, result="hit"), _count(FEDERATION_POLICY_CACHE, result="miss")
    denials = _count(FEDERATION_POLICY, decision="denied")
    policy.decide(org.pk, "", remote)
    policy.decide(org.pk, "", remote)
    assert _count(FEDERATION_POLICY_CACHE, result="hit") == hits + 1
    assert _count(FEDERATION_POLICY_CACHE, result="miss") == misses + 1
    assert _count(FEDERATION_POLICY, decision="denied") == denials + 2
    policy.clear_cache(org.pk)
    policy.decide(org.pk, "", remote)
    assert _count(FEDERATION_POLICY_CACHE, result="miss") == misses + 2
    # Same score, allow vs deny: deny wins.
    actions.set_policy(org=org, local_agent="echo", remote="sum.globex@berlin", effect=Effect.DENY)
    actions.set_policy(org=org, local_agent="echo", remote="globex@berlin", effect=Effect.ALLOW)
    policy.clear_cache()
    assert not policy.decide(org.pk, "echo", remote).allowed


@pytest.mark.django_db
def test_a_malformed_stored_rule_is_ignored_not_raised(org: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Saved through the admin before it validated patterns: every decision of the org raised InvalidAddress (a
    500 for each send, a dead letter for each message from a peer)."""
    from apps.federation.models import Policy

    bad = Policy.objects.create(organization=org, remote="***bad pattern", effect=Effect.DENY)
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    policy.clear_cache()
    with caplog.at_level("WARNING", logger="apps.federation.policy"):
        assert policy.decide(org.pk, "", Address("globex", peer="berlin")).allowed
    assert f"federation policy {bad.pk} of org {org.pk} ignored" in caplog.text


@pytest.mark.django_db
def test_a_policy_change_in_another_process_applies_at_once(org: Any) -> None:
    """Another process's change arrives as a bumped generation: a cached decision is not reused past it (a
    worker kept its cached deny for the TTL, so a dead letter requeued right after the fix died again)."""
    from apps.federation.models import Policy

    remote = Address.parse("globex@berlin")
    with override_settings(HERMES_FEDERATION_POLICY_CACHE_TTL=3600):
        policy.clear_cache()
        assert not policy.decide(org.pk, "", remote).allowed  # cached here: deny
        # What another process does: write the rule (its own cache is not ours) and bump the generation.
        Policy.objects.create(organization=org, remote="globex@berlin", effect=Effect.ALLOW)
        assert not policy.decide(org.pk, "", remote).allowed  # not told yet: the cached decision stands
        policy.bump_generation(org.pk)
        assert policy.decide(org.pk, "", remote).allowed


def test_the_direction_binding_fits_the_other_end_of_the_link_only() -> None:
    """paris calls berlin `berlin` and is `paris` there; berlin's row for the link is the mirror image."""
    from apps.federation.delivery import link_binding
    from apps.federation.inbound import link_mismatch
    from apps.federation.models import Peer

    at_paris = Peer(name="berlin", local_name="paris")
    at_berlin = Peer(name="paris", local_name="berlin")
    sent_by_paris = {"link": link_binding(at_paris)}
    assert sent_by_paris["link"] == {"from": "paris", "to": "berlin"}
    assert link_mismatch(at_berlin, sent_by_paris) is None
    assert "posted back" in (link_mismatch(at_paris, sent_by_paris) or "")  # reflected to paris by berlin
    assert link_mismatch(at_paris, {"link": link_binding(at_berlin)}) is None
    assert link_mismatch(at_berlin, {}) is None  # an older Hermes: no binding to check
