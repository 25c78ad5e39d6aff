"""The federation API and the staff admin: roles, isolation, sending, the DLQ (inspect, requeue, discard)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from apps.core.errors import HermesAPIError
from apps.federation import actions, policy
from apps.federation.models import (
    Effect,
    FederationAuditEvent,
    Message,
    Outbox,
    OutboxStatus,
    Peer,
)
from tests.factories import dead_letter

API = "/api/v1/federation"


@pytest.fixture
def berlin(db: Any) -> Peer:
    peer = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(peer, secret=b"k" * 32)
    return peer


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["task_request", "task_result", "task_cancel", "task_input", "receipt", "nonsense"])
def test_users_cannot_send_protocol_messages(client_for: Any, alice: Any, org: Any, berlin: Peer, kind: str) -> None:
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    sent = {"recipient": "echo.globex@berlin", "type": kind, "payload": {"message": {"parts": []}}}
    response = client_for(alice).post(f"{API}/messages", sent, format="json")
    assert response.status_code == 400, response.content
    (reason,) = response.json()["error"]["details"]["type"]
    assert reason.startswith(f"'{kind}' cannot be sent as a message: only 'message' can.")
    assert "POST /api/v1/federation/remote-tasks" in reason
    assert not Message.objects.for_org(org).exists()
    with pytest.raises(CommandError, match=f"'{kind}' cannot be sent as a message.*remote-tasks"):
        call_command("federation_send", "acme", "echo.globex@berlin", "--type", kind, stdout=io.StringIO())
    assert not Message.objects.for_org(org).exists()


@pytest.mark.django_db
def test_send_list_and_inspect_messages(client_for: Any, alice: Any, org: Any, berlin: Peer) -> None:
    api = client_for(alice)
    response = api.post(f"{API}/messages", {"recipient": "globex@berlin", "payload": {"t": 1}}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "policy_denied"
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    response = api.post(f"{API}/messages", {"recipient": "globex@berlin", "payload": {"t": 1}}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["delivery"]["status"] == "pending" and body["recipient"] == "globex@berlin"
    listed = api.get(f"{API}/messages").json()["results"]
    assert [m["id"] for m in listed] == [body["id"]]
    assert api.get(f"{API}/messages?status=pending").json()["results"][0]["id"] == body["id"]
    assert api.get(f"{API}/messages?status=delivered").json()["results"] == []
    assert api.get(f"{API}/messages/{body['id']}").json()["payload"] == {"t": 1}
    # Idempotency-Key: the same request again replays the original response and sends nothing new.
    keyed = {"recipient": "globex@berlin", "payload": {"t": 2}}
    first = api.post(f"{API}/messages", keyed, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(f"{API}/messages", keyed, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    changed = api.post(f"{API}/messages", {**keyed, "payload": {}}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert changed.status_code == 409
    assert Message.objects.for_org(org).count() == 2
    bad = api.post(f"{API}/messages", {"recipient": "x y", "payload": []}, format="json")
    assert bad.status_code == 400 and "payload" in bad.json()["error"]["details"]
    bad = api.post(f"{API}/messages", {"recipient": "x y", "payload": {}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_address"
    assert Message.objects.for_org(org).count() == 2


@pytest.mark.django_db
def test_a_sender_agent_must_be_one_of_the_orgs_own_agents(
    client_for: Any, alice: Any, org: Any, other_org: Any, berlin: Peer
) -> None:
    from apps.agents.models import Agent

    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    Agent.objects.create(organization=other_org, name="Theirs", slug="theirs", url="http://127.0.0.1:9/")
    api = client_for(alice)
    # Neither a slug of no agent nor another org's agent: the receiver would show the message as from it.
    for slug in ("not-mine", "theirs"):
        refused = api.post(
            f"{API}/messages", {"recipient": "globex@berlin", "payload": {}, "sender_agent": slug}, format="json"
        )
        assert refused.status_code == 400, refused.content
        error = refused.json()["error"]
        assert error["code"] == "unknown_agent" and f"acme has no agent '{slug}'" in error["details"]["sender_agent"][0]
    assert not Message.objects.for_org(org).exists()
    Agent.objects.create(organization=org, name="Mine", slug="mine", url="http://127.0.0.1:9/")
    sent = api.post(
        f"{API}/messages", {"recipient": "globex@berlin", "payload": {}, "sender_agent": "mine"}, format="json"
    )
    assert sent.status_code == 202 and sent.json()["sender_agent"] == "mine"


@pytest.mark.django_db
def test_dlq_inspect_requeue_discard_with_audit(client_for: Any, alice: Any, org: Any, berlin: Peer) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    messages = [actions.send_message(org=org, recipient="globex@berlin", payload={"i": i}) for i in range(4)]
    for m in messages:
        dead_letter(m)
    api = client_for(alice)
    listed = api.get(f"{API}/dlq").json()["results"]
    assert len(listed) == 4
    detail = api.get(f"{API}/dlq/{messages[0].id}").json()
    assert detail["message"]["payload"] == {"i": 0} and detail["last_error"] == "HTTP 401: bad signature"
    assert detail["attempt_log"][0]["http_status"] == 401 and detail["attempt_log"][0]["outcome"] == "permanent"
    assert api.post(f"{API}/dlq/{messages[0].id}/requeue").json() == {"requeued": [str(messages[0].id)]}
    many = api.post(f"{API}/dlq/requeue", {"ids": [str(messages[1].id), str(messages[2].id)]}, format="json")
    assert sorted(many.json()["requeued"]) == sorted([str(messages[1].id), str(messages[2].id)])
    discarded = api.post(f"{API}/dlq/{messages[3].id}/discard", {"reason": "peer retired"}, format="json")
    assert discarded.json() == {"discarded": [str(messages[3].id)]}
    assert FederationAuditEvent.objects.for_org(org).get(event="discarded").reason == "peer retired"
    statuses = dict(Outbox.objects.for_org(org).values_list("message_id", "status"))
    assert [statuses[m.id] for m in messages] == ["pending", "pending", "pending", "discarded"]
    assert api.get(f"{API}/dlq").json()["results"] == []
    events = FederationAuditEvent.objects.for_org(org).filter(event__in=["requeued", "discarded"])
    assert sorted(e.event for e in events) == ["discarded", "requeued", "requeued", "requeued"]
    assert all(e.actor == alice for e in events)
    # The audit API says who acted, as the org's audit log does (it listed the events without anyone).
    (listed_discard,) = api.get(f"{API}/audit?event=discarded").json()["results"]
    assert listed_discard["actor"] == {"id": alice.pk, "email": alice.email, "name": alice.name}
    # Bulk with an id that is not a dead letter of this org: nothing moves.
    missing = api.post(f"{API}/dlq/discard", {"ids": [str(messages[0].id)]}, format="json")
    assert missing.status_code == 404 and missing.json()["error"]["details"]["ids"] == [str(messages[0].id)]
    assert api.post(f"{API}/dlq/discard", {"ids": []}, format="json").status_code == 400


@pytest.mark.django_db
def test_other_orgs_rows_are_404_and_members_cannot_write(
    client_for: Any, alice: Any, mia: Any, charlie: Any, org: Any, other_org: Any, berlin: Peer
) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    message = actions.send_message(org=org, recipient="globex@berlin", payload={})
    dead_letter(message)
    contact = actions.create_contact(org=org, name="Globex", address="globex@berlin")
    rule = actions.set_policy(org=org, remote="rome", effect=Effect.DENY)
    theirs = client_for(charlie)
    for url in (
        f"{API}/dlq/{message.id}",
        f"{API}/messages/{message.id}",
        f"{API}/contacts/{contact.pk}",
        f"{API}/policies/{rule.pk}",
    ):
        assert theirs.get(url).status_code == 404, url
    assert theirs.post(f"{API}/dlq/{message.id}/requeue").status_code == 404
    assert theirs.get(f"{API}/dlq").json()["results"] == []
    assert theirs.get(f"{API}/audit").json()["results"] == []
    member = client_for(mia)
    assert member.get(f"{API}/dlq").status_code == 200
    refused = member.post(f"{API}/dlq/{message.id}/requeue")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "role_forbidden"
    assert Outbox.objects.for_org(org).get(message=message).status == OutboxStatus.DEAD


@pytest.mark.django_db
def test_contacts_policies_inbox_and_audit(client_for: Any, bob: Any, org: Any) -> None:
    api = client_for(bob)
    created = api.post(f"{API}/contacts", {"name": "Globex", "address": "Globex@Berlin"}, format="json")
    assert created.status_code == 201 and created.json()["address"] == "globex@berlin"
    dup = api.post(f"{API}/contacts", {"name": "again", "address": "globex@berlin"}, format="json")
    assert dup.status_code == 409
    assert api.post(f"{API}/contacts", {"name": "x", "address": "a b"}, format="json").status_code == 400
    assert api.delete(f"{API}/contacts/{created.json()['id']}").status_code == 204
    rule = api.post(f"{API}/policies", {"remote": "*@berlin", "effect": "allow"}, format="json")
    assert rule.status_code == 201
    replaced = api.post(f"{API}/policies", {"remote": "*@berlin", "effect": "deny", "reason": "x"}, format="json")
    assert replaced.json()["id"] == rule.json()["id"] and replaced.json()["effect"] == "deny"
    # A client tells creating from replacing (it was 201 either way).
    assert replaced.status_code == 200
    again = api.post(f"{API}/policies", {"remote": "*@berlin", "effect": "deny", "reason": "x"}, format="json")
    assert again.status_code == 200 and again.json() == replaced.json()
    assert api.post(f"{API}/policies", {"remote": "??", "effect": "allow"}, format="json").status_code == 400
    assert api.delete(f"{API}/policies/{rule.json()['id']}").status_code == 204
    assert api.get(f"{API}/inbox").json()["results"] == []
    actions.audit("accepted", org=org, message_id=uuid.uuid4(), reason="test")
    assert api.get(f"{API}/audit?event=accepted").json()["results"][0]["reason"] == "test"
    assert api.get(f"{API}/audit?event=duplicate").json()["results"] == []


@pytest.mark.django_db
def test_peers_are_readable_by_orgs_but_changed_only_by_staff(
    client_for: Any, alice: Any, org: Any, berlin: Peer, settings: Any
) -> None:
    api = client_for(alice)
    listed = api.get(f"{API}/peers").json()["results"]
    assert listed[0]["name"] == "berlin" and listed[0]["keys"][0]["state"] == "current"
    assert "secret" not in str(listed)
    refused = api.post(f"{API}/peers/berlin/keys")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "staff_required"
    alice.is_staff = True
    alice.save()
    added = api.post(f"{API}/peers/berlin/keys", {}, format="json")
    assert added.status_code == 201 and added.json()["secret"].startswith("whsec_")
    assert api.post(f"{API}/peers/berlin/keys/promote").json()["version"] == 2
    assert api.post(f"{API}/peers/berlin/keys/retire", {}, format="json").json()["state"] == "retired"
    given = api.post(f"{API}/peers/berlin/keys", {"secret": "whsec_" + "QUFB" * 11}, format="json")
    assert given.status_code == 201 and "secret" not in given.json()
    assert api.post(f"{API}/peers/berlin/keys/retire", {"version": 3}, format="json").status_code == 200
    assert api.post(f"{API}/peers/berlin/keys", {"secret": "nope"}, format="json").status_code == 400
    assert api.post(f"{API}/peers/berlin/keys/retire", {"version": 9}, format="json").status_code == 404
    made = api.post(
        f"{API}/peers", {"name": "rome", "base_url": "http://127.0.0.1:7", "local_name": "paris"}, format="json"
    )
    assert made.status_code == 201
    # Added, but said at once: deliveries to a private address outside the allowlist will be refused.
    settings.HERMES_SSRF_ALLOWLIST = []
    lan = api.post(f"{API}/peers", {"name": "lan", "base_url": "http://10.1.2.4", "local_name": "p"}, format="json")
    assert lan.status_code == 201 and "private network address" in lan.json()["delivery_warning"]
    again = api.post(f"{API}/peers", {"name": "rome", "base_url": "http://x.test", "local_name": "p"}, format="json")
    assert again.status_code == 400 and "name" in again.json()["error"]["details"]
    # A peer on the same Docker/cluster network is reached by its service name (a host without a dot).
    service = api.post(
        f"{API}/peers", {"name": "milan", "base_url": "http://hermes-milan:8000", "local_name": "p"}, format="json"
    )
    assert service.status_code == 201 and service.json()["base_url"] == "http://hermes-milan:8000"
    for junk in ("hermes-milan:8000", "ftp://x", "http://u:p@x", "http://x/?q=1", "http://x:99999"):
        refused = api.post(f"{API}/peers", {"name": "naples", "base_url": junk, "local_name": "p"}, format="json")
        assert refused.status_code == 400 and "base_url" in refused.json()["error"]["details"], junk
    credentials = api.post(
        f"{API}/peers", {"name": "naples", "base_url": "http://u:p@x", "local_name": "p"}, format="json"
    )
    assert credentials.json()["error"]["details"]["base_url"][0].startswith("Leave credentials out of the peer's URL")
    # Peer names are lower-case like every address part (`Gamma` could never be addressed), and a cloud metadata
    # URL, which the outbound guard refuses whatever the allowlist says, is refused at once in the guard's words.
    upper = api.post(
        f"{API}/peers", {"name": "Gamma", "base_url": "http://x.test", "local_name": "Paris"}, format="json"
    )
    assert upper.status_code == 400 and "(e.g. 'gamma')" in upper.json()["error"]["details"]["name"][-1]
    assert "(e.g. 'paris')" in upper.json()["error"]["details"]["local_name"][-1]
    metadata = api.post(
        f"{API}/peers", {"name": "imds", "base_url": "http://169.254.169.254", "local_name": "p"}, format="json"
    )
    assert metadata.status_code == 400
    assert "a cloud metadata endpoint" in metadata.json()["error"]["details"]["base_url"][0]
    assert not Peer.objects.filter(name__in=["gamma", "Gamma", "imds"]).exists()
    kinds = set(FederationAuditEvent.objects.unscoped("test").values_list("event", flat=True))
    assert {"key_added", "key_promoted", "key_retired"} <= kinds
    disabled = api.post(f"{API}/peers/rome/status", {"status": "disabled"}, format="json")
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    bad = api.post(f"{API}/peers/rome/status", {"status": "gone"}, format="json")
    assert bad.status_code == 400 and "status" in bad.json()["error"]["details"]


@pytest.mark.django_db
def test_admin_dlq_actions(admin_client: Client, org: Any, berlin: Peer) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    first, second = (actions.send_message(org=org, recipient="globex@berlin", payload={}) for _ in range(2))
    rows = [dead_letter(first), dead_letter(second)]
    url = "/admin/federation/outbox/"
    assert admin_client.get(url + "?status__exact=dead").status_code == 200
    assert admin_client.get(f"{url}{rows[0].pk}/change/").status_code == 200
    admin_client.post(url, {"action": "requeue_selected", "_selected_action": [rows[0].pk]})
    admin_client.post(url, {"action": "discard_selected", "_selected_action": [rows[1].pk, rows[0].pk]})
    statuses = dict(Outbox.objects.for_org(org).values_list("pk", "status"))
    assert statuses == {rows[0].pk: "pending", rows[1].pk: "discarded"}
    assert admin_client.get("/admin/federation/federationauditevent/").status_code == 200
    assert admin_client.get(f"/admin/federation/peer/{berlin.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_unknown_filter_values_are_400s_not_empty_lists(client_for: Any, alice: Any) -> None:
    client = client_for(alice)
    for path, name in (
        ("/api/v1/federation/messages?status=bogus", "status"),
        ("/api/v1/federation/audit?event=bogus", "event"),
    ):
        error = client.get(path).json()["error"]
        assert error["code"] == "invalid" and error["message"].startswith(f"'{name}' must be one of: ")
    assert client.get("/api/v1/federation/messages?status=dead").status_code == 200


@pytest.mark.django_db
def test_a_policys_local_agent_is_one_of_the_orgs_agents(client_for: Any, bob: Any, org: Any, other_org: Any) -> None:
    from apps.agents import actions as agent_actions
    from apps.agents.models import Agent
    from apps.federation.addresses import Address
    from apps.federation.models import Policy

    Agent.objects.create(organization=org, name="Echo", slug="demo-echo", url="http://127.0.0.1:9/")
    Agent.objects.create(organization=other_org, name="Theirs", slug="theirs", url="http://127.0.0.1:9/")
    fed = agent_actions.federated_agent(org, "echo.globex@berlin")
    api = client_for(bob)
    # Lower-cased like `remote`, so the rule matches the slug policies are asked with (it was stored as typed
    # and never matched).
    rule = api.post(f"{API}/policies", {"local_agent": "Demo-Echo", "remote": "*", "effect": "deny"}, format="json")
    assert rule.status_code == 201 and rule.json()["local_agent"] == "demo-echo"
    assert not policy.decide(org.pk, "demo-echo", Address.parse("globex@berlin")).allowed
    # No such agent here (a typo, another org's agent, a federated agent row): a precise 400, nothing stored.
    for slug in ("ghost", "theirs", fed.slug):
        refused = api.post(f"{API}/policies", {"local_agent": slug, "remote": "*", "effect": "deny"}, format="json")
        assert refused.status_code == 400, (slug, refused.content)
        error = refused.json()["error"]
        assert error["code"] == "unknown_agent" and error["details"]["local_agent"] == [
            f"acme has no agent '{slug}': local_agent is the slug of one of the organization's own agents (as on "
            "the Agents page), or empty for the whole organization."
        ]
    assert list(Policy.objects.for_org(org).values_list("local_agent", flat=True)) == ["demo-echo"]
    with pytest.raises(HermesAPIError, match="acme has no agent 'ghost'"):
        actions.set_policy(org=org, local_agent="ghost", remote="*", effect=Effect.ALLOW)
    assert (
        actions.set_policy(org=org, local_agent=" DEMO-echo ", remote="*", effect=Effect.ALLOW).pk == rule.json()["id"]
    )


@pytest.mark.django_db
def test_a_single_dead_letter_that_is_not_one_says_so(
    client_for: Any, alice: Any, charlie: Any, org: Any, berlin: Peer
) -> None:
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    delivered = actions.send_message(org=org, recipient="globex@berlin", payload={})
    Outbox.objects.for_org(org).filter(message=delivered).update(status=OutboxStatus.DELIVERED)
    dead = actions.send_message(org=org, recipient="globex@berlin", payload={})
    dead_letter(dead)
    expected = "This id is not in this org's dead-letter queue."
    for operation in ("requeue", "discard"):
        for who, message_id in ((alice, delivered.id), (alice, uuid.uuid4()), (charlie, dead.id)):
            # A delivered or discarded id, one that never existed, and another org's dead letter read the same.
            response = client_for(who).post(f"{API}/dlq/{message_id}/{operation}")
            assert response.status_code == 404, response.content
            error = response.json()["error"]
            assert (error["code"], error["message"], error["details"]) == ("not_found", expected, {})
    assert Outbox.objects.for_org(org).get(message=dead).status == OutboxStatus.DEAD


@pytest.mark.django_db
def test_a_link_without_a_live_key_is_refused_here_not_sent_unsigned(
    client_for: Any, alice: Any, org: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from apps.federation import delivery, transport
    from apps.federation.models import KeyState, LinkKey, MessageType

    oslo = actions.create_peer(name="oslo", base_url="http://127.0.0.1:9", local_name="paris")
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    reason = (
        "link 'oslo' has no live key; the instance's operators add one (federation_keys add, or staff on the "
        "console's Peers page)"
    )
    api = client_for(alice)
    sent = api.post(f"{API}/messages", {"recipient": "globex@oslo", "payload": {}}, format="json")
    assert sent.status_code == 400 and sent.json()["error"]["code"] == "no_link_key"
    assert sent.json()["error"]["message"] == f"The {reason}." and sent.json()["error"]["details"] == {
        "recipient": [reason]
    }
    asked = api.post(
        f"{API}/remote-tasks", {"agent": "echo.globex@oslo", "message": {"parts": [{"text": "hi"}]}}, format="json"
    )
    assert asked.status_code == 400 and asked.json()["error"]["details"] == {"agent": [reason]}
    assert not Message.objects.for_org(org).exists()
    # A reply (a task's result, cancel or follow-up) is part of a conversation under way: it is written, and its
    # delivery waits, retrying, instead of going out unsigned to be refused as the peer's bad_signature.
    signatures: list[str] = []

    def peer_down(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        signatures.append(headers.get("webhook-signature", ""))
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(transport, "post", peer_down)
    with django_capture_on_commit_callbacks(execute=False):
        reply = actions.send_message(
            org=org, recipient="globex@oslo", type=MessageType.TASK_RESULT, payload={}, reply=True
        )
    row = Outbox.objects.for_org(org).get(message=reply)
    assert delivery.deliver(row.pk) == OutboxStatus.FAILED and signatures == []  # nothing left
    row.refresh_from_db()
    assert row.last_error == reason and row.next_attempt_at is not None
    # Once the link has a key, what waited is due at once (not at the end of its backoff), and goes out signed.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        actions.add_key(oslo, secret=b"k" * 32)
    row.refresh_from_db()
    assert row.next_attempt_at is not None and row.next_attempt_at <= timezone.now() and callbacks
    assert LinkKey.objects.get(peer=oslo).state == KeyState.CURRENT
    delivery.deliver(row.pk)
    assert len(signatures) == 1 and signatures[0].startswith("v1,")
