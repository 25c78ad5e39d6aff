"""Federation in the Django admin: delivery records are evidence, so staff read them and change them only
through the audited DLQ actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.agents.models import Agent
from apps.federation import actions
from apps.federation.models import Effect, FederationAuditEvent, Message, Outbox, OutboxStatus, Peer, Policy
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory, dead_letter

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(org: Any) -> Client:
    client = Client()
    client.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def dead(org: Any, peer: Peer) -> list[Outbox]:
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    sent = [actions.send_message(org=org, recipient="globex@berlin", payload={"n": n}) for n in range(2)]
    return [dead_letter(message) for message in sent]


@pytest.mark.parametrize("model", ["outbox", "inboxentry", "message", "remotetask", "federatedtask"])
def test_delivery_records_cannot_be_added_edited_or_deleted(staff: Client, dead: list[Outbox], model: str) -> None:
    row = dead[0]
    pk = {"outbox": row.pk, "message": row.message_id}.get(model)
    base = f"/admin/federation/{model}/"
    assert staff.get(f"{base}add/").status_code == 403
    if pk is None:
        # Remote-task mirrors and federated-task links: result relay goes through them (one moved to another
        # org, or deleted, broke it), so they are as read-only as the messages they came in.
        from django.contrib import admin
        from django.test import RequestFactory

        model_admin = next(a for m, a in admin.site._registry.items() if m._meta.model_name == model)
        request = RequestFactory().get(base)
        request.user = UserFactory(email=f"{model}@hermes.test", is_staff=True, is_superuser=True)
        assert not model_admin.has_change_permission(request) and not model_admin.has_delete_permission(request)
        return
    page = staff.get(f"{base}{pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content  # shown read-only
    if model == "outbox":  # triage: the payload is on the page, and the error text finds the row
        assert "&quot;n&quot;: 0" in page.content.decode()
        found = staff.get(base, {"q": "bad signature"}).content.decode()
        assert f"/admin/federation/outbox/{row.pk}/change/" in found
    forged = {"status": "delivered", "organization": row.organization_id, "receipt_body": '{"forged": true}'}
    assert staff.post(f"{base}{pk}/change/", forged).status_code == 403
    assert staff.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.status == OutboxStatus.DEAD and row.receipt_body == "" and Message.objects.for_org(row.organization)


def test_admin_dlq_actions_are_audited_and_counted(staff: Client, org: Any, dead: list[Outbox]) -> None:
    # Filtered to dead letters, as the docs' triage says: the requeued rows leave the filter, which made the
    # message read "Requeued 2 of 0".
    changelist = "/admin/federation/outbox/?status__exact=dead"
    chosen = [str(row.pk) for row in dead]
    response = staff.post(changelist, {"action": "requeue_selected", "_selected_action": chosen}, follow=True)
    assert "Requeued 2 of 2 (only dead letters move)." in response.content.decode()
    assert FederationAuditEvent.objects.for_org(org).filter(event="requeued").count() == 2
    for row in dead:
        row.refresh_from_db()
        assert row.status != OutboxStatus.DEAD
    Outbox.objects.for_org(org).filter(pk=dead[0].pk).update(status=OutboxStatus.DEAD)
    everything = "/admin/federation/outbox/"  # unfiltered: one selected row is not a dead letter
    response = staff.post(everything, {"action": "discard_selected", "_selected_action": chosen}, follow=True)
    assert "Discarded 1 of 2 (only dead letters move)." in response.content.decode()


def test_adding_a_peer_the_guard_would_refuse_warns(staff: Client, settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []
    form = {"name": "lan", "base_url": "http://10.1.2.4", "local_name": "paris", "status": "active"}
    form.update({"keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0"})
    page = staff.post("/admin/federation/peer/add/", form, follow=True).content.decode()
    assert Peer.objects.filter(name="lan").exists()
    assert "Deliveries to this peer will be refused" in page and "private network address" in page


def _peer_form(peer: Peer, **changes: str) -> dict[str, str]:
    form = {"name": peer.name, "base_url": peer.base_url, "local_name": peer.local_name, "status": peer.status}
    form.update({"keys-TOTAL_FORMS": "1", "keys-INITIAL_FORMS": "1", "keys-0-id": str(peer.keys.get().pk)})
    form.update({"keys-0-peer": str(peer.pk)})
    return {**form, **changes}


def test_a_peer_cannot_be_renamed_in_the_admin(staff: Client, peer: Peer) -> None:
    # Its names are stored as text wherever the link is referred to (remote tasks, federated tasks and agents,
    # `*@berlin` rules): a rename orphaned them. They are shown read-only, with the way to rename a link.
    page = staff.get(f"/admin/federation/peer/{peer.pk}/change/").content.decode()
    assert 'name="name"' not in page and 'name="local_name"' not in page and 'name="base_url"' in page
    assert "To rename a link, add a new peer with the new names" in page
    saved = staff.post(f"/admin/federation/peer/{peer.pk}/change/", _peer_form(peer, name="rome", local_name="x"))
    assert saved.status_code == 302, saved.content.decode()[:2000]
    peer.refresh_from_db()
    assert (peer.name, peer.local_name) == ("berlin", "paris")
    # Adding one still takes both names.
    added = staff.get("/admin/federation/peer/add/").content.decode()
    assert 'name="name"' in added and 'name="local_name"' in added


def test_the_api_has_no_way_to_rename_a_peer(peer: Peer) -> None:
    staff = UserFactory(email="api-root@hermes.test", is_staff=True, is_superuser=True)
    MembershipFactory(organization=OrganizationFactory(slug="ops"), user=staff, role="owner")
    api = APIClient()
    api.force_login(staff)
    for method in ("put", "patch"):
        response = getattr(api, method)("/api/v1/federation/peers/berlin", {"name": "rome"}, format="json")
        assert response.status_code == 405, response.content
    peer.refresh_from_db()
    assert peer.name == "berlin"


def test_a_peer_with_message_history_is_disabled_not_deleted(staff: Client, org: Any, dead: list[Outbox]) -> None:
    peer = Peer.objects.get(name="berlin")
    refused = staff.get(f"/admin/federation/peer/{peer.pk}/delete/", follow=True).content.decode()
    assert "has message history" in refused and "disable the link instead" in refused
    assert "have permission" not in refused
    assert staff.post(f"/admin/federation/peer/{peer.pk}/delete/", {"post": "yes"}).status_code == 302
    # From the list ("Delete selected peers") it is said the same way, and nothing is deleted.
    bulk = {"action": "delete_selected", "_selected_action": [str(peer.pk)]}
    page = staff.post("/admin/federation/peer/", bulk).content.decode()
    assert "has message history" in page and "disable the link instead" in page
    assert "have permission" not in page
    assert staff.post("/admin/federation/peer/", {**bulk, "post": "yes"}).status_code == 200
    assert Peer.objects.filter(pk=peer.pk).exists()


def test_a_peer_without_history_can_be_deleted(staff: Client, peer: Peer) -> None:
    page = staff.get(f"/admin/federation/peer/{peer.pk}/delete/").content.decode()
    assert "Are you sure" in page
    staff.post(f"/admin/federation/peer/{peer.pk}/delete/", {"post": "yes"})
    assert not Peer.objects.filter(pk=peer.pk).exists()


def test_admin_policy_rules_are_checked_like_the_api(staff: Client, org: Any) -> None:
    Agent.objects.create(organization=org, name="Echo", slug="demo-echo", url="http://127.0.0.1:9/")
    form = {"organization": str(org.pk), "local_agent": "ghost", "remote": "*", "effect": "deny", "reason": ""}
    refused = staff.post("/admin/federation/policy/add/", form).content.decode()
    assert "acme has no agent &#x27;ghost&#x27;" in refused
    saved = staff.post("/admin/federation/policy/add/", {**form, "local_agent": "Demo-Echo", "remote": "Globex@Berlin"})
    assert saved.status_code == 302
    rule = Policy.objects.for_org(org).get()
    assert (rule.local_agent, rule.remote) == ("demo-echo", "globex@berlin")


def test_staff_who_may_only_view_the_outbox_cannot_requeue_or_discard(org: Any, dead: list[Outbox]) -> None:
    """`federation.view_outbox` was enough to discard dead letters for good."""
    from django.contrib.auth.models import Permission

    def staff_with(*codenames: str) -> Client:
        user = UserFactory(email=f"dlq-{'-'.join(codenames)}@hermes.test", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="federation", codename__in=codenames)
        )
        client = Client()
        client.force_login(user)
        return client

    changelist = "/admin/federation/outbox/"
    viewer = staff_with("view_outbox")
    assert "discard_selected" not in viewer.get(changelist).content.decode()
    viewer.post(changelist, {"action": "discard_selected", "_selected_action": [dead[0].pk]})
    assert Outbox.objects.for_org(org).get(pk=dead[0].pk).status == OutboxStatus.DEAD
    changer = staff_with("view_outbox", "change_outbox")
    changer.post(changelist, {"action": "discard_selected", "_selected_action": [dead[0].pk]})
    assert Outbox.objects.for_org(org).get(pk=dead[0].pk).status == OutboxStatus.DISCARDED


def test_admin_policy_changes_go_through_the_actions(staff: Client, org: Any) -> None:
    """A rule changed in the admin was in no audit log: it is in the org's, under the staff member."""
    from apps.core.models import AuditEvent

    form = {"organization": str(org.pk), "local_agent": "", "remote": "Globex", "effect": "allow", "reason": ""}
    assert staff.post("/admin/federation/policy/add/", form).status_code == 302
    rule = Policy.objects.for_org(org).get()
    page = staff.get(f"/admin/federation/policy/{rule.pk}/change/").content.decode()
    # The pair is what the rule is: staff change what it says (another pair is another rule).
    assert 'name="remote"' not in page and 'name="local_agent"' not in page and 'name="effect"' in page
    changed = staff.post(f"/admin/federation/policy/{rule.pk}/change/", {"effect": "deny", "reason": "competitor"})
    assert changed.status_code == 302
    staff.post(f"/admin/federation/policy/{rule.pk}/delete/", {"post": "yes"})
    assert not Policy.objects.for_org(org).exists()
    events = list(AuditEvent.objects.filter(org_id=org.pk, action__startswith="policy.").order_by("pk"))
    assert [event.action for event in events] == ["policy.created", "policy.updated", "policy.deleted"]
    assert {event.actor.email for event in events if event.actor} == {"root@hermes.test"}
    assert events[1].details["changes"] == {"effect": ["allow", "deny"], "reason": ["", "competitor"]}


def test_admin_contact_changes_go_through_the_actions(staff: Client, org: Any) -> None:
    from apps.core.models import AuditEvent
    from apps.federation.models import Contact

    form = {"organization": str(org.pk), "name": "Globex", "address": "Globex@Berlin", "notes": ""}
    assert staff.post("/admin/federation/contact/add/", form).status_code == 302
    contact = Contact.objects.for_org(org).get()
    assert contact.address == "globex@berlin"  # stored canonical, as from the console and the API
    # The book has the address already (in another spelling): refused with the action's words, nothing added.
    again = staff.post("/admin/federation/contact/add/", {**form, "address": "globex@BERLIN"}, follow=True)
    assert "Not saved: globex@berlin is already in the address book." in again.content.decode()
    assert Contact.objects.for_org(org).count() == 1
    page = staff.get(f"/admin/federation/contact/{contact.pk}/change/").content.decode()
    assert 'name="address"' not in page and 'name="name"' in page
    staff.post(f"/admin/federation/contact/{contact.pk}/change/", {"name": "Globex Corp", "notes": ""})
    bulk = {"action": "delete_selected", "_selected_action": [contact.pk], "post": "yes"}
    staff.post("/admin/federation/contact/", bulk)
    assert not Contact.objects.for_org(org).exists()
    events = list(AuditEvent.objects.filter(org_id=org.pk, action__startswith="contact.").order_by("pk"))
    assert [event.action for event in events] == ["contact.created", "contact.updated", "contact.deleted"]
    assert events[1].details == {"address": "globex@berlin", "changes": {"name": ["Globex", "Globex Corp"]}}
    assert all(event.actor is not None and event.actor.is_staff for event in events)


def test_admin_peer_additions_and_status_changes_are_audited(staff: Client) -> None:
    from apps.core.models import AuditEvent

    form = {"name": "oslo", "base_url": "http://127.0.0.1:9/", "local_name": "paris", "status": "disabled"}
    form.update({"keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0"})
    assert staff.post("/admin/federation/peer/add/", form).status_code == 302
    oslo = Peer.objects.get(name="oslo")
    assert (oslo.base_url, oslo.status) == ("http://127.0.0.1:9", "disabled")  # as create_peer stores it
    staff.post(f"/admin/federation/peer/{oslo.pk}/change/", {**form, "status": "active"})
    oslo.refresh_from_db()
    assert oslo.status == "active"
    events = AuditEvent.objects.filter(target_type="peer", target_id=str(oslo.pk)).order_by("pk")
    assert [(event.action, event.details.get("status")) for event in events] == [
        ("peer.created", None),
        ("peer.status_changed", ["active", "disabled"]),
        ("peer.status_changed", ["disabled", "active"]),
    ]
    assert all(event.actor is not None and event.actor.is_staff and event.org_id is None for event in events)


def test_admin_peer_url_changes_and_deletions_are_audited(staff: Client, peer: Peer) -> None:
    """A changed base_url (where every org's messages for the peer go) and a deleted link were in no log."""
    from apps.core.models import AuditEvent

    original, url = peer.base_url, f"/admin/federation/peer/{peer.pk}/change/"
    saved = staff.post(url, _peer_form(peer, base_url="http://127.0.0.1:8/hermes/"))
    assert saved.status_code == 302, saved.content.decode()[:2000]
    peer.refresh_from_db()
    assert peer.base_url == "http://127.0.0.1:8/hermes"
    staff.post(url, _peer_form(peer))  # unchanged: nothing to audit
    staff.post(f"/admin/federation/peer/{peer.pk}/delete/", {"post": "yes"})
    assert not Peer.objects.filter(pk=peer.pk).exists()
    events = AuditEvent.objects.filter(target_type="peer", target_id=str(peer.pk)).order_by("pk")
    updated, deleted = [event for event in events if event.action in ("peer.updated", "peer.deleted")]
    assert updated.details["base_url"] == [original, "http://127.0.0.1:8/hermes"]
    assert deleted.action == "peer.deleted" and deleted.details["name"] == "berlin"
    assert all(event.actor is not None and event.actor.email == "root@hermes.test" for event in (updated, deleted))
