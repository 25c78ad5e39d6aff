"""Org, membership and invitation actions (the API and the console both call these)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from apps.core.errors import HermesAPIError
from apps.core.models import AuditEvent
from apps.core.permissions import Role
from apps.orgs import actions
from apps.orgs.models import Invitation, Membership, Organization
from tests.factories import UserFactory, access_for

pytestmark = pytest.mark.django_db


def _membership(org: Any, user: Any) -> Membership:
    return Membership.objects.for_org(org).get(user=user)


def test_create_organization_makes_the_creator_owner_and_audits(alice: Any) -> None:
    org = actions.create_organization(user=alice, name="Initech", slug="initech")
    assert _membership(org, alice).role == Role.OWNER
    assert AuditEvent.objects.filter(action="org.created", org_id=org.pk, actor=alice).exists()
    with pytest.raises(ValidationError) as err:
        actions.create_organization(user=alice, name="Again", slug="initech")
    assert "slug" in err.value.message_dict


def test_the_last_owner_can_neither_leave_nor_be_demoted(org: Any, alice: Any, bob: Any) -> None:
    owner = access_for(alice, org)
    with pytest.raises(HermesAPIError) as err:
        actions.change_role(access=owner, membership=_membership(org, alice), role=Role.ADMIN)
    assert err.value.error_code == "last_owner"
    with pytest.raises(HermesAPIError):
        actions.remove_member(access=owner, membership=_membership(org, alice))
    actions.change_role(access=owner, membership=_membership(org, bob), role=Role.OWNER)
    actions.change_role(access=owner, membership=_membership(org, alice), role=Role.ADMIN)
    assert _membership(org, alice).role == Role.ADMIN


def test_admins_remove_members_but_not_owners(org: Any, alice: Any, bob: Any, mia: Any) -> None:
    admin = access_for(bob, org)
    with pytest.raises(HermesAPIError) as err:
        actions.remove_member(access=admin, membership=_membership(org, alice))
    assert err.value.error_code == "role_forbidden"
    actions.remove_member(access=admin, membership=_membership(org, mia))
    assert not Membership.objects.for_org(org).filter(user=mia).exists()


def test_anyone_may_leave(org: Any, alice: Any, mia: Any) -> None:
    actions.remove_member(access=access_for(mia, org), membership=_membership(org, mia))
    assert not Membership.objects.for_org(org).filter(user=mia).exists()


def test_plan_changes_are_for_owners(org: Any, alice: Any, bob: Any) -> None:
    with pytest.raises(HermesAPIError):
        actions.update_organization(access=access_for(bob, org), plan="team")
    actions.update_organization(access=access_for(bob, org), name="Acme Corp")
    updated = actions.update_organization(access=access_for(alice, org), plan="team")
    assert (updated.name, updated.plan) == ("Acme Corp", "team")
    with pytest.raises(ValidationError):
        actions.update_organization(access=access_for(alice, org), plan="platinum")


def test_invitation_round_trip(
    org: Any, alice: Any, bob: Any, mailoutbox: Any, django_capture_on_commit_callbacks: Any, eager_celery: None
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        issued = actions.invite_member(access=access_for(bob, org), email="Nina@Example.test", role=Role.DEVELOPER)
    assert issued.invitation.email == "nina@example.test"
    assert issued.invitation.digest != issued.token and issued.token not in issued.invitation.digest
    assert len(mailoutbox) == 1 and issued.token in mailoutbox[0].body
    nina = UserFactory(email="nina@example.test")
    stranger = UserFactory(email="eve@example.test")
    with pytest.raises(HermesAPIError) as err:
        actions.accept_invitation(user=stranger, token=issued.token)
    assert err.value.error_code == "invitation_email_mismatch"
    membership = actions.accept_invitation(user=nina, token=issued.token)
    assert membership.role == Role.DEVELOPER and membership.organization_id == org.pk
    with pytest.raises(HermesAPIError) as err:
        actions.accept_invitation(user=nina, token=issued.token)
    assert err.value.error_code == "invitation_accepted"
    with pytest.raises(HermesAPIError) as err:
        actions.accept_invitation(user=nina, token="nope")
    assert err.value.error_code == "invitation_unknown"


def test_only_owners_invite_owners_and_reinvites_replace(org: Any, alice: Any, bob: Any) -> None:
    with pytest.raises(HermesAPIError):
        actions.invite_member(access=access_for(bob, org), email="x@example.test", role=Role.OWNER)
    first = actions.invite_member(access=access_for(alice, org), email="x@example.test", role=Role.OWNER)
    second = actions.invite_member(access=access_for(alice, org), email="x@example.test", role=Role.MEMBER)
    first.invitation.refresh_from_db()
    assert first.invitation.state() == "revoked" and second.invitation.state() == "pending"
    with pytest.raises(HermesAPIError) as err:
        actions.invite_member(access=access_for(alice, org), email="bob@acme.test")
    assert err.value.error_code == "already_member"
    actions.revoke_invitation(access=access_for(alice, org), invitation=second.invitation)
    with pytest.raises(HermesAPIError):
        actions.revoke_invitation(access=access_for(alice, org), invitation=second.invitation)
    assert Invitation.objects.for_org(org).filter(revoked_at__isnull=True).count() == 0


def test_delete_organization_is_for_owners(org: Any, alice: Any, bob: Any) -> None:
    with pytest.raises(HermesAPIError):
        actions.delete_organization(access=access_for(bob, org))
    actions.delete_organization(access=access_for(alice, org))
    assert not Organization.objects.filter(pk=org.pk).exists()
    assert AuditEvent.objects.filter(action="org.deleted", org_id=org.pk).exists()


def test_a_deleted_orgs_slug_is_never_anyone_elses(org: Any, alice: Any, bob: Any, client_for: Any) -> None:
    """Other orgs' federation rules and contacts name an org by its slug: a newcomer registering a deleted org's
    slug was let in by the rules that trusted the deleted org."""
    actions.delete_organization(access=access_for(alice, org))
    with pytest.raises(ValidationError) as refused:
        actions.create_organization(user=bob, name="Not Acme", slug="acme")
    assert "belonged to an organization that was deleted, and stays reserved" in refused.value.message_dict["slug"][0]
    api = client_for(bob).post("/api/v1/orgs", {"name": "Not Acme", "slug": "ACME"}, format="json")
    assert api.status_code == 400 and "stays reserved" in api.json()["error"]["details"]["slug"][0]
    console = client_for(bob).post("/orgs/new/", {"name": "Acme"})  # the slug derived from the name
    assert console.status_code == 422 and "stays reserved" in console.content.decode()
    assert not Organization.objects.filter(slug="acme").exists()
    # The instance's own demo orgs come back with `seed_demo` (reclaim), and only that way.
    again = actions.create_organization(user=alice, name="Acme", slug="acme", reclaim=True)
    assert again.slug == "acme"
