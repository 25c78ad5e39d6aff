"""The API key admin: staff revoke keys only with the permission to change them, not with the one to view them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from apps.core.models import AuditEvent
from apps.orgs.models import APIKey, Membership, Organization
from tests.factories import UserFactory, issue_api_key, key_client

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/orgs/apikey/"


def _staff(*codenames: str) -> Client:
    user = UserFactory(email=f"staff-{'-'.join(codenames)}@hermes.test", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="orgs", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_staff_who_may_only_view_keys_cannot_revoke_them(org: Any, alice: Any, charlie: Any, other_org: Any) -> None:
    """`orgs.view_apikey` was enough to run "Revoke selected API keys" on any org's keys."""
    key, plaintext = issue_api_key(charlie, other_org, scopes=["org:read"])
    viewer = _staff("view_apikey")
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200 and "revoke_selected" not in page.content.decode()  # not offered
    forced = viewer.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [key.pk]}, follow=True)
    assert "Revoked 1 key(s)" not in forced.content.decode()  # and refused when posted anyway
    assert APIKey.objects.for_org(other_org).get(pk=key.pk).revoked_at is None
    assert key_client(plaintext).get("/api/v1/me").status_code == 200
    assert not AuditEvent.objects.filter(action="api_key.revoked").exists()


def test_staff_who_may_change_keys_revoke_them_through_the_audited_action(org: Any, alice: Any) -> None:
    key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    changer = _staff("view_apikey", "change_apikey")
    assert "revoke_selected" in changer.get(CHANGELIST).content.decode()
    revoked = changer.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [key.pk]}, follow=True)
    assert "Revoked 1 key(s)" in revoked.content.decode()
    assert key_client(plaintext).get("/api/v1/me").status_code == 401
    assert AuditEvent.objects.get(org_id=org.pk, action="api_key.revoked").details.get("by_staff") is True
    # The admin stays read-only for them: the change permission buys the audited revoke, not an edit form.
    edit = changer.post(f"{CHANGELIST}{key.pk}/change/", {"name": "renamed", "organization": org.pk})
    assert edit.status_code == 403


# --- Organizations and memberships are made by people, not added by staff ---------------------------------------


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    return client


def test_staff_cannot_add_memberships(org: Any, alice: Any) -> None:
    """A staff member with only `orgs.add_membership` made themself an owner of any org (a bare save(), unaudited):
    memberships come from invitations."""
    adder = _staff("add_membership", "view_membership")
    form = {"user": UserFactory(email="staff-add_membership-x@hermes.test").pk, "organization": org.pk, "role": "owner"}
    assert adder.get("/admin/orgs/membership/add/").status_code == 403
    assert adder.post("/admin/orgs/membership/add/", form).status_code == 403
    root = Client()
    root.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    assert root.post("/admin/orgs/membership/add/", form).status_code == 403  # not even a superuser
    assert list(Membership.objects.for_org(org).values_list("user__email", flat=True)) == ["alice@acme.test"]


def test_staff_cannot_add_an_organization_or_change_its_creator(root: Client, org: Any, alice: Any) -> None:
    """Added here, an org had no owner, no audit row and an unchecked slug (`DEMO` beside `demo`)."""
    form = {"name": "Demo", "slug": "DEMO", "plan": "free", "created_by": alice.pk}
    assert root.get("/admin/orgs/organization/add/").status_code == 403
    assert root.post("/admin/orgs/organization/add/", form).status_code == 403
    assert not Organization.objects.filter(slug__iexact="demo").exists()
    other = UserFactory(email="someone@hermes.test")
    url = f"/admin/orgs/organization/{org.pk}/change/"
    assert 'name="created_by"' not in root.get(url).content.decode()
    assert root.post(url, {"name": org.name, "plan": org.plan, "created_by": other.pk}).status_code == 302
    org.refresh_from_db()
    assert org.created_by_id != other.pk


@pytest.fixture
def federation_history(other_org: Any, charlie: Any) -> Any:
    """Globex with a task, a sent message (and its outbox row), a received one that started a task, and a
    federation audit row: rows only read-only admins show."""
    from django.utils import timezone

    from apps.agents import actions as agent_actions
    from apps.federation.models import AuditEvent as Event
    from apps.federation.models import FederatedTask, FederationAuditEvent, InboxEntry, Message, Outbox
    from apps.tasks import actions as task_actions

    agent = agent_actions.register_agent_manually(org=other_org, name="Runner", url="https://agent.example.com/")
    text = {"role": "user", "parts": [{"kind": "text", "text": "x"}]}
    task = task_actions.create_task(org=other_org, agent=agent, message=text)
    sent = Message.objects.create(organization=other_org, recipient="acme", type="message")
    now = timezone.now()
    Outbox.objects.create(organization=other_org, message=sent, queued_at=now, next_attempt_at=now)
    received = InboxEntry.objects.create(
        organization=other_org, message_id=uuid.uuid4(), sender="acme", type="task_request", receipt={}
    )
    FederatedTask.objects.create(
        organization=other_org, task_id=str(task.pk), inbox_entry=received, agent_slug=agent.slug,
        reply_to="acme", correlation_id=received.message_id,
    )  # fmt: skip
    FederationAuditEvent.objects.create(organization=other_org, event=Event.REJECTED, reason="x")
    return other_org


def test_an_org_with_federation_history_can_be_deleted(root: Client, federation_history: Any) -> None:
    """Django asked for the delete permission on every federation row, which the read-only admins give nobody: the
    page said the account could not delete them and the POST was a 403, even for a superuser, while the owner's
    DELETE /api/v1/orgs/<slug> (delete_organization) worked."""
    org = federation_history
    url = f"/admin/orgs/organization/{org.pk}/delete/"
    page = root.get(url).content.decode()
    assert "Are you sure" in page and "have permission" not in page
    assert "Outbox" in page or "outbox" in page  # what goes is still listed
    assert root.post(url, {"post": "yes"}).status_code == 302
    assert not Organization.objects.filter(pk=org.pk).exists()
    event = AuditEvent.objects.get(org_id=org.pk, action="org.deleted")
    assert event.actor is not None and event.actor.email == "root@hermes.test"


def test_revoking_keys_counts_only_what_this_request_revoked(org: Any, alice: Any) -> None:
    """Two tabs revoking the same keys both said "Revoked 2 key(s)" while only one revocation happened."""
    from django.contrib import admin
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.test import RequestFactory

    from apps.orgs import actions

    keys = [issue_api_key(alice, org, scopes=["org:read"])[0] for _ in range(2)]
    stale = list(APIKey.objects.for_org(org).filter(pk__in=[key.pk for key in keys]))  # as this tab's list read them
    staff = UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True)
    actions.staff_revoke_api_key(key=keys[0], actor=staff)  # the other tab, first
    request = RequestFactory().post(CHANGELIST)
    request.user = staff
    request._messages = CookieStorage(request)  # type: ignore[attr-defined]
    admin.site._registry[APIKey].revoke_selected(request, stale)  # type: ignore[attr-defined]
    assert [str(message) for message in request._messages] == [  # type: ignore[attr-defined]
        "Revoked 1 key(s); streams opened with them are closed."
    ]
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 2
