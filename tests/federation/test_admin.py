"""Federation in the Django admin: delivery records are evidence, so staff read them and change them only
through the audited DLQ actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.federation import actions
from apps.federation.models import Effect, FederationAuditEvent, Message, Outbox, OutboxStatus, Peer
from tests.factories import UserFactory, dead_letter

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
