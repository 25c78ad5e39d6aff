"""Federation console pages under the role matrix (reads: every member; changes: federation:write = admins and
owners; peers and link keys: staff too) and isolation from charlie's org."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.agents.models import Agent
from apps.federation import actions
from apps.federation.models import (
    AttemptOutcome,
    Contact,
    Effect,
    FederationAuditEvent,
    KeyState,
    LinkKey,
    Outbox,
    OutboxStatus,
    Peer,
    Policy,
)
from tests.console.conftest import HX, main_html

pytestmark = pytest.mark.django_db


@pytest.fixture
def berlin(db: Any) -> Peer:
    peer = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(peer, secret=b"k1" * 16)
    return peer


def dead_letter(org: Any, peer: Peer, payload: dict[str, Any] | None = None) -> Outbox:
    """A message that failed permanently, moved to the DLQ by the real delivery transitions."""
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    message = actions.send_message(org=org, recipient=f"globex@{peer.name}", payload=payload or {"text": "hi"})
    claimed = actions.claim_delivery(message.outbox.pk)
    assert claimed is not None
    actions.finish_attempt(
        claimed, actions.AttemptResult(outcome=AttemptOutcome.PERMANENT, duration_ms=12.5, http_status=400, error="bad")
    )
    return Outbox.objects.for_org(org).get(pk=claimed.pk)


@pytest.mark.parametrize("page", ["", "contacts/", "policies/", "outbox/", "inbox/", "dlq/", "audit/"])
@pytest.mark.parametrize("who", ["alice", "bob", "dave", "mia"])
def test_every_member_reads_federation(as_user: Any, request: Any, berlin: Peer, who: str, page: str) -> None:
    response = as_user(request.getfixturevalue(who)).get(f"/federation/{page}")
    assert response.status_code == 200


def test_peers_are_read_only_without_staff(as_user: Any, alice: Any, berlin: Peer) -> None:
    client = as_user(alice)
    html = main_html(client.get("/federation/"))
    assert "berlin" in html and "only staff" not in html and "staff manage them" in html and "Add next key" not in html
    assert (
        client.post("/federation/peers/", {"name": "x", "base_url": "https://x.test", "local_name": "y"}).status_code
        == 403
    )
    assert client.post("/federation/peers/berlin/keys/add/").status_code == 403
    assert not Peer.objects.filter(name="x").exists()


def test_staff_rotate_link_keys_in_three_steps(as_user: Any, alice: Any, berlin: Peer) -> None:
    alice.is_staff = True
    alice.save()
    client = as_user(alice)
    added = client.post("/federation/peers/berlin/keys/add/", **HX)
    html = added.content.decode()
    assert added.status_code == 200 and "data-link-secret" in html and "Shown once" in html
    assert "no-store" in added["Cache-Control"]
    assert LinkKey.objects.get(peer=berlin, version=2).state == KeyState.NEXT
    assert client.post("/federation/peers/berlin/keys/promote/", **HX).status_code == 200
    assert LinkKey.objects.get(peer=berlin, version=2).state == KeyState.CURRENT
    retired = client.post("/federation/peers/berlin/keys/retire/", **HX)
    assert retired.status_code == 200 and "data-link-secret" not in retired.content.decode()
    assert LinkKey.objects.get(peer=berlin, version=1).state == KeyState.RETIRED
    # Out of order: nothing to retire now — a readable 409 for the toast.
    again = client.post("/federation/peers/berlin/keys/retire/", **HX)
    assert again.status_code == 409 and "no previous key" in again["X-Hermes-Error"]
    assert client.post("/federation/peers/nowhere/keys/add/").status_code == 404


def test_staff_complete_a_link_with_the_secret_the_other_operator_gave(as_user: Any, alice: Any, berlin: Peer) -> None:
    from apps.federation.signing import encode_secret

    alice.is_staff = True
    alice.save()
    client = as_user(alice)
    page = main_html(client.get("/federation/"))
    assert 'name="secret"' in page and "paste the <code>whsec_…</code> secret they gave you" in page
    # Berlin's operator started a rotation and gave us its secret: the same key on both sides, nothing generated.
    theirs = b"r" * 32
    added = client.post("/federation/peers/berlin/keys/add/", {"secret": encode_secret(theirs)}, **HX)
    html = added.content.decode()
    assert added.status_code == 200 and "data-link-secret" not in html
    key = LinkKey.objects.get(peer=berlin, version=2)
    assert key.secret() == theirs and key.state == KeyState.NEXT
    assert f"fingerprint {key.fingerprint} (theirs must be the same)" in html
    # Checked as `federation_keys add --secret` and the API check it: said next to the field, nothing added.
    for bad, why in (
        ("whsec_not base64!", "followed by base64"),
        (encode_secret(b"short"), "at least 24 random bytes"),
    ):
        refused = client.post("/federation/peers/berlin/keys/add/", {"secret": bad}, **HX)
        assert refused.status_code == 422 and "no-store" in refused["Cache-Control"]
        text = refused.content.decode()
        assert why in text and 'aria-invalid="true"' in text and bad not in text
    assert LinkKey.objects.filter(peer=berlin).count() == 2


def test_staff_add_a_peer(as_user: Any, alice: Any, berlin: Peer) -> None:
    alice.is_staff = True
    alice.save()
    client = as_user(alice)
    ok = client.post(
        "/federation/peers/", {"name": "tokyo", "base_url": "https://tokyo.example", "local_name": "paris"}, **HX
    )
    assert ok.status_code == 200 and Peer.objects.filter(name="tokyo").exists()
    dup = client.post("/federation/peers/", {"name": "tokyo", "base_url": "https://t.example", "local_name": "p"}, **HX)
    assert dup.status_code == 422 and "already exists" in dup.content.decode()
    private = client.post("/federation/peers/", {"name": "lan", "base_url": "http://10.0.0.1", "local_name": "p"}, **HX)
    html = private.content.decode()
    assert Peer.objects.filter(name="lan").exists() and "Deliveries to this peer will be refused" in html
    assert "a private network address" in html and "HERMES_SSRF_ALLOWLIST" in html
    # A spelling of 127.0.0.1 the resolver accepts is said at once too, not first at delivery time.
    hexed = client.post("/federation/peers/", {"name": "hex", "base_url": "http://0x7f000001", "local_name": "p"}, **HX)
    assert "Deliveries to this peer will be refused" in hexed.content.decode()


@pytest.mark.parametrize(("who", "status"), [("bob", 200), ("dave", 403), ("mia", 403)])
def test_contacts_need_federation_write(as_user: Any, request: Any, org: Any, who: str, status: int) -> None:
    response = as_user(request.getfixturevalue(who)).post(
        "/federation/contacts/", {"name": "Globex", "address": "globex@berlin"}, **HX
    )
    assert response.status_code == status
    assert Contact.objects.for_org(org).filter(address="globex@berlin").exists() == (status == 200)


def test_contacts_are_removed_by_writers_only(as_user: Any, bob: Any, dave: Any, org: Any) -> None:
    contact = actions.create_contact(org=org, name="Globex", address="globex@berlin")
    assert as_user(dave).post(f"/federation/contacts/{contact.pk}/delete/", **HX).status_code == 403
    assert "Remove" not in main_html(as_user(dave).get("/federation/contacts/"))
    removed = as_user(bob).post(f"/federation/contacts/{contact.pk}/delete/", **HX)
    assert removed.status_code == 200 and "removed from the address book" in removed.content.decode()
    assert not Contact.objects.for_org(org).exists()
    assert as_user(bob).post(f"/federation/contacts/{contact.pk}/delete/", **HX).status_code == 404


def test_staff_disable_and_enable_a_link(as_user: Any, alice: Any, bob: Any, berlin: Peer) -> None:
    assert as_user(bob).post("/federation/peers/berlin/status/", {"status": "disabled"}).status_code == 403
    alice.is_staff = True
    alice.save()
    client = as_user(alice)
    disabled = client.post("/federation/peers/berlin/status/", {"status": "disabled"}, **HX)
    assert disabled.status_code == 200 and "Enable link" in disabled.content.decode()
    berlin.refresh_from_db()
    assert berlin.status == "disabled"
    assert client.post("/federation/peers/berlin/status/", {"status": "active"}, **HX).status_code == 200
    berlin.refresh_from_db()
    assert berlin.status == "active"
    assert client.post("/federation/peers/berlin/status/", {"status": "gone"}).status_code == 404


def test_contact_address_errors_are_precise(as_user: Any, bob: Any, org: Any) -> None:
    response = as_user(bob).post("/federation/contacts/", {"name": "Bad", "address": "Not An Address!"}, **HX)
    assert response.status_code == 422 and "is not a federation address" in response.content.decode()
    assert not Contact.objects.for_org(org).exists()


def test_policies_add_and_remove(as_user: Any, bob: Any, org: Any, charlie: Any) -> None:
    client = as_user(bob)
    saved = client.post("/federation/policies/", {"remote": "*@berlin", "effect": "deny", "reason": "not yet"}, **HX)
    assert saved.status_code == 200 and "*@berlin" in saved.content.decode()
    rule = Policy.objects.for_org(org).get()
    assert as_user(charlie).post(f"/federation/policies/{rule.pk}/delete/").status_code == 404
    bad = client.post("/federation/policies/", {"remote": "nope nope", "effect": "allow"}, **HX)
    assert bad.status_code == 422
    # A local agent that is not one of the org's agents guarded nothing: refused on the field, nothing saved.
    typo = client.post("/federation/policies/", {"remote": "*", "effect": "deny", "local_agent": "no-such-agent"}, **HX)
    assert typo.status_code == 422
    said = typo.content.decode().replace("&#x27;", "'")
    assert "acme has no agent 'no-such-agent': local_agent is the slug of one of the organization's own agents" in said
    assert not Policy.objects.for_org(org).filter(local_agent="no-such-agent").exists()
    Agent.objects.create(organization=org, name="Echo", slug="demo-echo", url="http://127.0.0.1:9/")
    upper = client.post("/federation/policies/", {"remote": "*", "effect": "deny", "local_agent": "Demo-Echo"}, **HX)
    assert upper.status_code == 200 and Policy.objects.for_org(org).filter(local_agent="demo-echo").exists()
    Policy.objects.for_org(org).filter(local_agent="demo-echo").delete()
    assert client.post(f"/federation/policies/{rule.pk}/delete/", **HX).status_code == 200
    assert not Policy.objects.for_org(org).exists()


def test_outbox_send_and_message_detail(as_user: Any, bob: Any, org: Any, charlie: Any, berlin: Peer) -> None:
    client = as_user(bob)
    denied = client.post("/federation/outbox/", {"recipient": "globex@berlin", "payload": '{"a": 1}'}, **HX)
    assert denied.status_code == 422 and "policy forbids" in denied.content.decode()
    bad_json = client.post("/federation/outbox/", {"recipient": "globex@berlin", "payload": "{oops"}, **HX)
    assert bad_json.status_code == 422 and "Not valid JSON" in bad_json.content.decode()
    abyss = client.post("/federation/outbox/", {"recipient": "globex@berlin", "payload": "[" * 50_000}, **HX)
    assert abyss.status_code == 422 and "The JSON nests too deeply to be read" in abyss.content.decode()  # was a 500
    row = dead_letter(org, berlin, {"text": "inspect me"})
    html = main_html(client.get("/federation/outbox/"))
    assert str(row.message_id)[:8] in html and "Dead-lettered" in html
    # The example payload is a placeholder: a prefilled value had to be deleted before every send.
    textarea = html.split('<textarea name="payload"', 1)[1].split("</textarea>", 1)[0]
    assert 'placeholder="{&quot;text&quot;: &quot;hello&quot;}"' in textarea and textarea.endswith(">\n")
    detail = main_html(client.get(f"/federation/messages/{row.message_id}/"))
    assert "inspect me" in detail and "permanent" in detail and "400" in detail and "Requeue" in detail
    assert "{\n  &quot;text&quot;: &quot;inspect me&quot;\n}" in detail  # JSON as it travels, not a Python dict
    assert as_user(charlie).get(f"/federation/messages/{row.message_id}/").status_code == 404
    assert client.get("/federation/messages/not-a-uuid/").status_code == 404


def test_dlq_requeue_and_discard(
    as_user: Any, bob: Any, org: Any, berlin: Peer, django_capture_on_commit_callbacks: Any
) -> None:
    first, second = dead_letter(org, berlin), dead_letter(org, berlin)
    client = as_user(bob)
    page = main_html(client.get("/federation/dlq/"))
    assert str(first.message_id) in page and "Requeue selected" in page
    # Each button asks its own question (hermes.js, on the click): hx-confirm on a button of an htmx form was never
    # read, so both ran unasked (tests/e2e/test_console_flow.py clicks them).
    assert 'value="requeue" data-confirm-click="Requeue the selected messages' in page
    assert 'value="discard" data-confirm-click="Discard the selected messages for good?' in page
    assert "hx-confirm" not in page
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/federation/dlq/apply/", {"operation": "requeue", "ids": [str(first.message_id)]}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1 message requeued" in html and str(first.message_id) not in html and str(second.message_id) in html
    first.refresh_from_db()
    assert first.status == OutboxStatus.PENDING and first.attempts == 0
    assert (
        client.post("/federation/dlq/apply/", {"operation": "discard", "ids": [str(second.message_id)]}).status_code
        == 302
    )
    second.refresh_from_db()
    assert second.status == OutboxStatus.DISCARDED
    # A selection gone stale (discarded meanwhile from another tab or the API): said, and the list is current.
    stale = client.post("/federation/dlq/apply/", {"operation": "requeue", "ids": [str(second.message_id)]}, **HX)
    html = stale.content.decode()
    assert stale.status_code == 200 and "1 of the 1 selected message is no longer in the dead-letter queue" in html
    second.refresh_from_db()
    assert second.status == OutboxStatus.DISCARDED
    events = set(FederationAuditEvent.objects.for_org(org).values_list("event", flat=True))
    assert {"requeued", "discarded", "dead_lettered"} <= events
    reasons = dict(FederationAuditEvent.objects.for_org(org).values_list("event", "reason"))
    assert reasons["discarded"] == "discarded from the console by bob@acme.test"  # it said "discardd"
    assert reasons["requeued"] == "requeued from the console by bob@acme.test"
    audit = main_html(client.get("/federation/audit/", {"event": "requeued"}))
    assert "Requeued from the DLQ" in audit and "bob@acme.test" in audit


def test_dlq_changes_need_write_and_stay_in_the_org(
    as_user: Any, dave: Any, charlie: Any, org: Any, berlin: Peer
) -> None:
    row = dead_letter(org, berlin)
    body = {"operation": "requeue", "ids": [str(row.message_id)]}
    assert as_user(dave).post("/federation/dlq/apply/", body).status_code == 403
    # Another org's dead letter is not in charlie's queue: answered like a row handled meanwhile, nothing moves.
    assert as_user(charlie).post("/federation/dlq/apply/", body).status_code == 302
    assert as_user(charlie).get("/federation/dlq/").content.decode().count(str(row.message_id)) == 0
    row.refresh_from_db()
    assert row.status == OutboxStatus.DEAD


def test_remote_tasks_request_and_timeline(as_user: Any, bob: Any, dave: Any, org: Any, charlie: Any) -> None:
    from apps.federation.models import FederationAuditEvent, RemoteTask

    client = as_user(bob)
    denied = client.post("/federation/remote-tasks/", {"agent": "echo.globex", "text": "hi"})
    assert denied.status_code == 422 and "policy forbids" in denied.content.decode()
    assert FederationAuditEvent.objects.for_org(org).filter(event="policy_denied").count() == 1
    no_agent = client.post("/federation/remote-tasks/", {"agent": "globex", "text": "hi"})
    assert no_agent.status_code == 422 and "name the agent" in no_agent.content.decode()
    assert as_user(dave).post("/federation/remote-tasks/", {"agent": "echo.globex", "text": "hi"}).status_code == 403
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    ok = client.post("/federation/remote-tasks/", {"agent": "echo.globex", "text": "hi"})
    remote = RemoteTask.objects.for_org(org).get()
    # The requester lands on its own task page: the remote task is one of its tasks.
    assert ok.status_code == 302 and ok["Location"] == f"/tasks/{remote.task_id}/"
    assert "echo.globex" in main_html(client.get(ok["Location"]))
    mirror = f"/federation/remote-tasks/{remote.pk}/"
    page = main_html(client.get(mirror))
    assert "echo.globex" in page and "Waiting for the remote side" in page and 'hx-trigger="every 2s"' in page
    assert f"/tasks/{remote.task_id}/" in page
    fragment = client.get(mirror, **HX).content.decode()
    assert fragment.lstrip().startswith('<div class="grid-2" id="remote-timeline"')
    assert str(remote.pk)[:8] in main_html(client.get("/federation/remote-tasks/"))
    assert as_user(charlie).get(mirror).status_code == 404
    assert as_user(charlie).get(ok["Location"]).status_code == 404


def test_an_inbox_handling_error_is_shown_as_text(as_user: Any, mia: Any, org: Any) -> None:
    from apps.federation.models import InboxEntry, MessageType

    InboxEntry.objects.create(
        organization=org,
        message_id=uuid.uuid4(),
        sender="globex",
        type=MessageType.TASK_REQUEST,
        receipt={},
        handling_error="No agent called 'summarizer' here.",
    )
    html = main_html(as_user(mia).get("/federation/inbox/"))
    # It was only a title tooltip on the "error" badge: unreadable from a keyboard or on a phone.
    assert '<span class="small" data-handling-error>No agent called &#x27;summarizer&#x27; here.</span>' in html
    assert "title=" not in html.split("data-handling-error", 1)[0].rsplit("<tr", 1)[1]


def test_times_are_labelled_utc_with_a_machine_readable_datetime(as_user: Any, mia: Any, org: Any) -> None:
    from datetime import UTC, datetime

    from apps.federation.models import InboxEntry, MessageType

    entry = InboxEntry.objects.create(
        organization=org, message_id=uuid.uuid4(), sender="globex", type=MessageType.TASK_REQUEST, receipt={}
    )
    InboxEntry.objects.for_org(org).filter(pk=entry.pk).update(
        created_at=datetime(2026, 11, 26, 23, 49, 11, tzinfo=UTC)
    )
    html = main_html(as_user(mia).get("/federation/inbox/"))
    # Without JavaScript: UTC, and saying so; static/js/hermes.js shows it in the viewer's time zone.
    assert '<time datetime="2026-11-26T23:49:11+00:00">2026-11-26 23:49:11 UTC</time>' in html
