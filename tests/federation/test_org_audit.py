"""Contacts and policies are org settings: every change of them is in the org's audit log (/org/audit/), with what
it said, and a rule that replaces another one for the same pair says so where it is saved."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.core.models import AuditEvent
from apps.federation import actions
from apps.federation.models import Contact, Effect, Peer, Policy
from tests.console.conftest import HX, main_html

pytestmark = pytest.mark.django_db


def _signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _events(org: Any, prefix: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(org_id=org.pk, action__startswith=prefix).order_by("pk"))


def test_console_contact_changes_are_in_the_orgs_audit_log(org: Any, alice: Any, bob: Any) -> None:
    client = _signed_in(bob)
    assert client.post("/federation/contacts/", {"name": "Globex", "address": "Globex@Berlin"}, **HX).status_code == 200
    contact = Contact.objects.for_org(org).get()
    assert client.post(f"/federation/contacts/{contact.pk}/delete/", **HX).status_code == 200
    added, removed = _events(org, "contact.")
    assert (added.action, removed.action) == ("contact.created", "contact.deleted")
    for event in (added, removed):
        assert event.actor == bob and event.target_type == "contact" and event.target_id == str(contact.pk)
        assert event.details == {"name": "Globex", "address": "globex@berlin"}  # the address as stored
    # Where the org's admins read it.
    log = main_html(_signed_in(alice).get("/org/audit/"))
    assert "<code>contact.created</code>" in log and "<code>contact.deleted</code>" in log


def test_console_policy_changes_are_in_the_orgs_audit_log(org: Any, alice: Any, bob: Any) -> None:
    client = _signed_in(bob)
    client.post("/federation/policies/", {"remote": "demo", "effect": "allow", "reason": "partner"}, **HX)
    client.post("/federation/policies/", {"remote": "Demo", "effect": "deny", "reason": "partner"}, **HX)
    rule = Policy.objects.for_org(org).get()
    client.post(f"/federation/policies/{rule.pk}/delete/", **HX)
    created, updated, deleted = _events(org, "policy.")
    pair = {"local_agent": "", "remote": "demo"}
    assert created.action == "policy.created"
    assert created.details == {**pair, "effect": "allow", "reason": "partner"}
    assert updated.action == "policy.updated"
    assert updated.details == {**pair, "effect": "deny", "changes": {"effect": ["allow", "deny"]}}
    assert deleted.action == "policy.deleted"
    assert deleted.details == {**pair, "effect": "deny", "reason": "partner"}
    assert {event.actor for event in (created, updated, deleted)} == {bob}
    assert {event.target_id for event in (created, updated, deleted)} == {str(rule.pk)}
    log = main_html(_signed_in(alice).get("/org/audit/"))
    assert "<code>policy.updated</code>" in log


def test_saving_the_same_rule_again_writes_nothing(org: Any) -> None:
    first = actions.save_policy(org=org, remote="*", effect=Effect.ALLOW, reason="open")
    again = actions.save_policy(org=org, remote="*", effect=Effect.ALLOW, reason="open")
    assert again.rule.pk == first.rule.pk and again.replaced is None and first.replaced is None
    assert [event.action for event in _events(org, "policy.")] == ["policy.created"]
    # A new reason is a change of the rule (said and logged), though the effect stays.
    reworded = actions.save_policy(org=org, remote="*", effect=Effect.ALLOW, reason="everyone")
    assert reworded.replaced == "allow"
    assert _events(org, "policy.")[-1].details["changes"] == {"reason": ["open", "everyone"]}


def test_a_replaced_rule_is_said_in_the_flash(org: Any, bob: Any) -> None:
    """ "allow demo" then "deny Demo" silently turned the allow round: the flash said only "Rule saved"."""
    client = _signed_in(bob)
    first = client.post("/federation/policies/", {"remote": "demo", "effect": "allow"}, **HX).content.decode()
    assert "Rule saved: allow * &lt;-&gt; demo." in first and "replaces" not in first
    second = client.post("/federation/policies/", {"remote": "Demo", "effect": "deny"}, **HX).content.decode()
    assert "Rule saved: deny * &lt;-&gt; demo. It replaces the earlier allow rule." in second
    assert Policy.objects.for_org(org).get().effect == Effect.DENY
    # Another pair is a rule of its own: nothing replaced.
    other = client.post("/federation/policies/", {"remote": "demo@berlin", "effect": "allow"}, **HX).content.decode()
    assert "Rule saved: allow * &lt;-&gt; demo@berlin." in other and "replaces" not in other


def test_peer_changes_are_audited_in_no_orgs_log(org: Any, alice: Any) -> None:
    # A link belongs to the instance: staff read its trail in the admin, no org sees it in its own.
    peer = actions.create_peer(name="oslo", base_url="http://127.0.0.1:9/", local_name="paris", actor=alice)
    actions.set_peer_status(peer, "disabled", actor=alice)
    actions.set_peer_status(peer, "disabled", actor=alice)  # no change: nothing to record
    events = list(AuditEvent.objects.filter(target_type="peer", target_id=str(peer.pk)).order_by("pk"))
    assert [(e.action, e.org_id, e.actor) for e in events] == [
        ("peer.created", None, alice),
        ("peer.status_changed", None, alice),
    ]
    assert events[0].details == {"name": "oslo", "base_url": "http://127.0.0.1:9", "local_name": "paris"}
    assert events[1].details == {"name": "oslo", "status": ["active", "disabled"]}
    assert Peer.objects.get(pk=peer.pk).status == "disabled"
