"""People in the Django admin: deleting or deactivating one goes through apps.accounts.actions, so their
memberships end as from the console (an org keeps its last owner, each removal audited, the invitations they sent
revoked). Django's own delete cascaded the memberships away, unaudited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from apps.accounts.models import User
from apps.core.models import AuditEvent
from apps.orgs import actions as org_actions
from apps.orgs.models import Invitation, Membership
from tests.factories import MembershipFactory, UserFactory, access_for

pytestmark = pytest.mark.django_db
USERS = "/admin/accounts/user/"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    return client


def _change_form(user: Any, **changes: Any) -> dict[str, Any]:
    form = {
        "email": user.email, "name": user.name, "is_active": "on",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }  # fmt: skip
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_deleting_an_orgs_last_owner_is_refused(staff: Client, org: Any, alice: Any, bob: Any) -> None:
    single = staff.post(f"{USERS}{alice.pk}/delete/", {"post": "yes"}, follow=True).content.decode()
    assert "Not deleted: alice@acme.test is the last active owner of acme: make someone else an owner" in single
    assert "deleted successfully" not in single
    # In bulk, with someone who could go: nobody goes (not bob first, then a refusal for alice).
    bulk = {"action": "delete_selected", "_selected_action": [str(bob.pk), str(alice.pk)], "post": "yes"}
    listed = staff.post(USERS, bulk, follow=True).content.decode()
    assert "Not deleted: alice@acme.test is the last active owner of acme" in listed
    assert "No one was deleted." in listed
    assert "Successfully deleted" not in listed
    assert User.objects.filter(pk__in=[alice.pk, bob.pk]).count() == 2
    assert Membership.objects.for_org(org).filter(user__in=[alice, bob]).count() == 2
    assert not AuditEvent.objects.filter(action__in=["member.removed", "user.deleted"]).exists()
    assert not LogEntry.objects.filter(object_id__in=[str(alice.pk), str(bob.pk)]).exists()


def test_deleting_a_person_removes_their_memberships_through_the_action(
    staff: Client, org: Any, alice: Any, bob: Any, mia: Any
) -> None:
    invitation = org_actions.invite_member(access=access_for(bob, org), email="eve@example.test").invitation
    deleted = staff.post(f"{USERS}{bob.pk}/delete/", {"post": "yes"}, follow=True).content.decode()
    assert "deleted successfully" in deleted
    assert not User.objects.filter(pk=bob.pk).exists()
    removed = AuditEvent.objects.get(org_id=org.pk, action="member.removed")
    assert removed.details["email"] == "bob@acme.test" and removed.actor.email == "root@hermes.test"
    assert Invitation.objects.for_org(org).get(pk=invitation.pk).revoked_at is not None  # its link stops working
    assert AuditEvent.objects.filter(action="invitation.revoked", target_id=str(invitation.pk)).exists()
    assert AuditEvent.objects.get(action="user.deleted").details["email"] == "bob@acme.test"
    bulk = {"action": "delete_selected", "_selected_action": [str(mia.pk)], "post": "yes"}
    assert "Successfully deleted 1 user" in staff.post(USERS, bulk, follow=True).content.decode()
    assert AuditEvent.objects.filter(org_id=org.pk, action="member.removed", details__email="mia@acme.test").exists()


def test_deactivating_an_orgs_last_owner_is_refused(
    staff: Client, org: Any, other_org: Any, alice: Any, bob: Any
) -> None:
    MembershipFactory(organization=other_org, user=alice, role="owner")
    refused = staff.post(f"{USERS}{alice.pk}/change/", _change_form(alice, is_active=None), follow=True)
    page = refused.content.decode()
    assert "Not saved:" in page and "last active owner of acme, globex" in page
    assert "was changed successfully" not in page
    alice.refresh_from_db()
    assert alice.is_active
    # With another owner in each org, alice may be deactivated, and it is audited.
    bob_in_acme = Membership.objects.for_org(org).get(user=bob)
    org_actions.change_role(access=access_for(alice, org), membership=bob_in_acme, role="owner")
    MembershipFactory(organization=other_org, user=bob, role="owner")
    saved = staff.post(f"{USERS}{alice.pk}/change/", _change_form(alice, is_active=None), follow=True)
    assert "was changed successfully" in saved.content.decode()
    alice.refresh_from_db()
    assert not alice.is_active
    event = AuditEvent.objects.get(action="user.deactivated")
    assert event.target_id == str(alice.pk) and event.actor.email == "root@hermes.test"
    # Alice, deactivated, still counts as an owner for remove_member: bob is refused all the same, as nobody could
    # sign in to manage either org after him.
    refused = staff.post(f"{USERS}{bob.pk}/delete/", {"post": "yes"}, follow=True).content.decode()
    assert "Not deleted: bob@acme.test is the last active owner of acme, globex" in refused
    assert User.objects.filter(pk=bob.pk).exists()
