"""Every state change of orgs, memberships, invitations and API keys.

Each action runs in one transaction, writes an audit event and defers side effects (email) to `on_commit`.
Bad input raises `django.core.exceptions.ValidationError` with per-field messages; a refused state change raises
`HermesAPIError`/`Conflict` (code + message). The API turns both into the error shape, and the console shows the
same messages, so both surfaces behave the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import RestrictedError
from django.utils import timezone

from apps.core import audit
from apps.core.api import require_action as _require
from apps.core.errors import Conflict, HermesAPIError
from apps.core.mail import send_later
from apps.core.permissions import MATRIX, SCOPES, Access, Role, role_allows
from apps.core.validators import visible_email
from apps.orgs import auth, selectors, tokens
from apps.orgs.models import APIKey, Invitation, Membership, Organization, Plan, RetiredOrgSlug

MAX_ROTATION_GRACE = timedelta(days=30)
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
INVITATION_LIFETIME = timedelta(days=7)


# --- Organizations --------------------------------------------------------------------------------------------


_ORG_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def org_slug(value: str) -> str:
    """The slug as Hermes keeps it, or ValidationError. Slugs name orgs in URLs and in federation addresses,
    which are case-insensitive (`Acme` reaches `acme`): so they are lower case — a mixed-case slug could not be
    reached from a peer, and `QA-Org` beside `qa-org` would be a lookalike of another org."""
    slug = value.strip().lower()
    if not _ORG_SLUG.match(slug) or len(slug) > 60:
        message = f"'{value[:60]}' is not a slug: use lowercase letters, digits and single hyphens, e.g. acme-labs."
        raise ValidationError({"slug": [message]})
    return slug


@transaction.atomic
def slug_refusal(slug: str) -> str | None:
    """Why an org may not take `slug` (a live org has it, or a deleted one had it), or None."""
    if Organization.objects.filter(slug=slug).exists():
        return f"The slug '{slug}' is taken; choose another."
    if RetiredOrgSlug.objects.filter(slug=slug).exists():
        return (
            f"The slug '{slug}' belonged to an organization that was deleted, and stays reserved: other "
            "organizations' federation rules and contacts may still name it. Choose another."
        )
    return None


@transaction.atomic
def create_organization(
    *, user: Any, name: str, slug: str, plan: str = Plan.FREE, reclaim: bool = False
) -> Organization:
    """Create an org with `user` as its first owner. `reclaim`: the slug may be a deleted org's (`seed_demo`
    recreating the demo orgs of this instance, which it deleted itself); nobody else takes one."""
    slug = org_slug(slug)
    if reclaim:
        RetiredOrgSlug.objects.filter(slug=slug).delete()
    if (refused := slug_refusal(slug)) is not None:
        raise ValidationError({"slug": [refused]})
    org = Organization.objects.create(name=name, slug=slug, plan=plan, created_by=user)
    Membership.objects.create(organization=org, user=user, role=Role.OWNER)
    audit.record("org.created", org=org, actor=user, target=org, name=name, slug=slug, plan=plan)
    return org


@transaction.atomic
def update_organization(*, access: Access, name: str | None = None, plan: str | None = None) -> Organization:
    """Rename (`org:admin`) or change the plan (`org:billing`, owners only)."""
    org = Organization.objects.select_for_update().get(pk=access.org.pk)
    changes: dict[str, Any] = {}
    if plan is not None and plan != org.plan:
        _require(access, "org:billing")
        if plan not in Plan.values:
            raise ValidationError({"plan": [f"Unknown plan '{plan}'; choose one of {', '.join(Plan.values)}."]})
        changes["plan"] = [org.plan, plan]
        org.plan = plan
    if name is not None and name != org.name:
        _require(access, "org:admin")
        changes["name"] = [org.name, name]
        org.name = name
    if changes:
        org.save(update_fields=[*changes.keys()])
        audit.record("org.updated", access=access, target=org, changes=changes)
    return org


def delete_organization(*, access: Access) -> None:
    """Delete the org and every row it owns. Refused (409, nothing deleted) while another org has unfinished tasks
    on one of this org's public agents: they still need the agent. Other orgs' finished tasks on them are their
    history: they keep a retired stand-in of the agent in their own org (agents.actions.keep_for_other_orgs)."""
    _require(access, "org:delete")
    org = access.org
    try:
        for attempt in range(1, _DELETE_ATTEMPTS + 1):
            try:
                _delete_org(access, org)
                break
            except OperationalError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _DEADLOCK or attempt == _DELETE_ATTEMPTS:
                    raise
    except RestrictedError as exc:
        # The rows that hold the delete back: other orgs' unfinished tasks (Task.agent is the only RESTRICT
        # reference; the finished ones were moved to stand-ins).
        agents = sorted({getattr(getattr(row, "agent", None), "name", str(row)) for row in exc.restricted_objects})
        raise Conflict(
            f"{org.name} cannot be deleted while other organizations have tasks in progress on its public agents "
            f"({', '.join(agents)}): try again once they have finished (or reached their deadline).",
            code="org_in_use",
            details={"agents": agents},
        ) from exc


_DEADLOCK = "40P01"
_DELETE_ATTEMPTS = 3


@transaction.atomic
def _delete_org(access: Access, org: Any) -> None:
    from apps.tasks.models import Task  # the tasks app builds on orgs: imported where the org's tasks are needed

    # The org's running tasks before the org row. A worker recording on a task holds the task's row and then
    # needs a key-share lock on the org's row (inserting an event that refers to it); taking the org row first
    # and then deleting that task deadlocked with it (a 500 for the person deleting the org). Only a task
    # created and claimed between these two statements can still cross them: that deadlock is retried.
    unfinished = Task.objects.for_org(org).filter(finished_at__isnull=True).select_for_update().order_by("pk")
    list(unfinished.values_list("pk"))
    # Then the org row, as every membership change takes it: deleting the memberships while one of them is
    # changing would otherwise lock the rows in another order than the change does.
    _lock_org(org, deleting=True)
    # Other orgs' tasks on this org's agents: the finished ones keep a stand-in of the agent; an unfinished one
    # still refers to the agent and makes the delete below a RestrictedError (409 `org_in_use`).
    running = Task.objects.unscoped("other orgs' tasks on this org's agents").filter(
        agent__organization=org, finished_at__isnull=True
    )
    if not running.exclude(organization=org).exists():
        from apps.agents.actions import keep_for_other_orgs  # agents build on orgs

        keep_for_other_orgs(org)
    audit.record("org.deleted", access=access, target=org, slug=org.slug)
    RetiredOrgSlug.objects.get_or_create(slug=org.slug)
    Organization.objects.filter(pk=org.pk).delete()


# --- Members ------------------------------------------------------------------------------------------------


def _lock_org(org: Any, *, deleting: bool = False) -> None:
    # The org row is the mutex of who belongs to the org and of its keys: every role change, removal, invitation
    # and key issue, rotation and revocation takes it first, so they run one at a time per org and take their row
    # locks in one order (org, owners by pk, the member; org, the open invitation; org, the key). Locks taken in
    # the order each action happened to need them deadlocked: two owners demoting themselves each held their own
    # row and waited for the other's among the owners' (a 500).
    # FOR NO KEY UPDATE, not FOR UPDATE: it does not block the key-share lock that inserting any row referring to
    # the org (a task, an accepted membership) takes. Deleting the org takes the full lock.
    rows = Organization.objects.select_for_update(no_key=not deleting).filter(pk=getattr(org, "pk", org))
    list(rows.values_list("pk"))


def _lock_owners(org: Any) -> list[Membership]:
    # Locking every owner row serialises concurrent demotions/removals, so two owners demoting each other at
    # the same moment cannot both succeed and leave the org without an owner. Callers hold the org row already
    # (`_lock_org`); pk order keeps the row locks in one order all the same.
    return list(Membership.objects.for_org(org).select_for_update().filter(role=Role.OWNER).order_by("pk"))


def _lock_member(org: Any, membership: Membership) -> tuple[Membership, list[Membership]]:
    """The membership as it is now and the org's owners, locked in the one order (org, owners by pk, member).
    A 404 when it was removed meanwhile (a concurrent request got there first)."""
    _lock_org(org)
    owners = _lock_owners(org)
    locked = next((owner for owner in owners if owner.pk == membership.pk), None)
    if locked is None:
        locked = Membership.objects.for_org(org).select_for_update().filter(pk=membership.pk).first()
    if locked is None:
        raise HermesAPIError("This member is no longer in the organization.", code="not_found", status_code=404)
    return locked, owners


def _guard_last_owner(membership: Membership, owners: list[Membership]) -> None:
    if membership.role == Role.OWNER and len(owners) <= 1:
        raise Conflict(
            "An organization must keep at least one owner: make someone else an owner first.", code="last_owner"
        )


@transaction.atomic
def change_role(*, access: Access, membership: Membership, role: str) -> Membership:
    """Owners change roles (`org:roles`); the org never loses its last owner."""
    _require(access, "org:roles")
    if role not in Role.values:
        raise ValidationError({"role": [f"Unknown role '{role}'; choose one of {', '.join(Role.values)}."]})
    membership, owners = _lock_member(access.org, membership)
    if membership.role == role:
        return membership
    if role != Role.OWNER:
        _guard_last_owner(membership, owners)
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    _revoke_invitations_beyond(access, membership.user_id, role)
    audit.record(
        "member.role_changed",
        access=access,
        target=membership,
        user_id=membership.user_id,
        email=membership.user.email,  # who, in words: the audit log shows no user ids anywhere else
        role=[previous, role],
    )
    return membership


@transaction.atomic
def remove_member(*, access: Access, membership: Membership) -> None:
    """Admins remove members but not owners; anyone may leave; the last owner may not."""
    # Leaving is a person's decision: through an API key, removing anyone (even its creator) needs `org:admin`.
    leaving = access.api_key is None and access.user is not None and membership.user_id == access.user.pk

    def require_right(member: Membership) -> None:
        if not leaving:
            _require(access, "org:roles" if member.role == Role.OWNER else "org:admin")

    require_right(membership)  # refused before taking any lock
    membership, owners = _lock_member(access.org, membership)
    require_right(membership)  # and as it is now: a member made an owner meanwhile takes `org:roles` to remove
    _guard_last_owner(membership, owners)
    audit.record(
        "member.removed",
        access=access,
        target=membership,
        user_id=membership.user_id,
        email=membership.user.email,
        role=membership.role,
    )
    Membership.objects.for_org(access.org).filter(pk=membership.pk).delete()
    _revoke_invitations_beyond(access, membership.user_id, None)


# --- Invitations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # shown once (emailed); only its digest is stored
    replaced: int = 0  # open invitations to the same address this one revoked (their links stop working)


def invitation_url(token: str) -> str:
    return f"{settings.HERMES_PUBLIC_URL}/invitations/{token}/"


def _revoke_invitations_beyond(access: Access, user_id: Any, role: str | None) -> None:
    """Revoke the pending invitations `user_id` sent that their role now (None: no longer a member) could not send:
    an invitation grants its role whenever it is accepted, so an admin demoted or removed could otherwise still
    let in, as an admin, an address they control. Audited like any revocation, with the reason."""
    pending = Invitation.objects.for_org(access.org).filter(invited_by_id=user_id, accepted_at=None, revoked_at=None)
    if role is not None and role_allows(role, "org:admin"):
        if role_allows(role, "org:roles"):
            return
        pending = pending.filter(role=Role.OWNER)  # admins invite anyone but owners
    reason = "its sender is no longer a member" if role is None else f"its sender is now {role}"
    for invitation in pending.select_for_update():
        _revoke_invitation(access, invitation, reason=reason)


def _revoke_invitation(access: Access, invitation: Invitation, **why: Any) -> None:
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit.record("invitation.revoked", access=access, target=invitation, email=invitation.email, **why)


# The reason the audit row of an invitation revoked by re-inviting its address gives (`invitation.revoked`).
REPLACED_BY_NEW_INVITATION = "replaced by a new invitation"


@transaction.atomic
def invite_member(*, access: Access, email: str, role: str = Role.MEMBER) -> IssuedInvitation:
    """Email an invitation; re-inviting an address replaces its open invitation. Inviting owners is `org:roles`."""
    _require(access, "org:admin")
    if role not in Role.values:
        raise ValidationError({"role": [f"Unknown role '{role}'; choose one of {', '.join(Role.values)}."]})
    if role == Role.OWNER:
        _require(access, "org:roles")
    email = email.strip().lower()
    try:
        visible_email(email)  # a lookalike of a member's address is not an address to invite
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from None
    # Invitations of one address run one at a time, each replacing the one before it. Unserialised, every one of
    # five simultaneous invitations revoked the open one (none yet) and inserted its own, and all but the first
    # broke the one-open-invitation-per-address constraint: a 500 each.
    _lock_org(access.org)
    open_ones = list(
        Invitation.objects.for_org(access.org)
        .select_for_update()
        .filter(email=email, accepted_at=None, revoked_at=None)
        .order_by("pk")
    )
    # After locking the open invitation: one accepted meanwhile has made its address a member by now.
    if Membership.objects.for_org(access.org).filter(user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member of this organization.", code="already_member")
    now = timezone.now()
    Invitation.objects.for_org(access.org).filter(pk__in=[old.pk for old in open_ones]).update(revoked_at=now)
    token = tokens.new_invitation_token()
    invitation = Invitation.objects.create(
        organization=access.org,
        email=email,
        role=role,
        digest=tokens.digest(token),
        invited_by=access.user,
        expires_at=now + INVITATION_LIFETIME,
    )
    audit.record("invitation.created", access=access, target=invitation, email=email, role=role)
    for old in open_ones:
        # Its link stops working as if an admin had revoked it: the trail says so, and why.
        audit.record(
            "invitation.revoked",
            access=access,
            target=old,
            email=email,
            reason=REPLACED_BY_NEW_INVITATION,
            replaced_by=invitation.pk,
        )
    org_name, inviter = access.org.name, getattr(access.user, "email", "someone")
    # On commit: a request that fails after this point sends no email for an invitation that was never stored.
    send_later(
        f"You are invited to {org_name} on Hermes",
        f"{inviter} invited you to join {org_name} as {role}.\n\n"
        f"Accept within {INVITATION_LIFETIME.days} days: {invitation_url(token)}\n",
        [email],
    )
    return IssuedInvitation(invitation, token, len(open_ones))


@transaction.atomic
def revoke_invitation(*, access: Access, invitation: Invitation) -> Invitation:
    _require(access, "org:admin")
    invitation = Invitation.objects.for_org(access.org).select_for_update().get(pk=invitation.pk)
    state = invitation.state()
    if state != "pending":
        replaced_by = selectors.invitation_replaced_by(invitation) if state == "revoked" else None
        if replaced_by is not None:
            # "Already revoked" sent people looking for who revoked it: nobody did, a newer invitation replaced it.
            raise Conflict(
                f"This invitation was replaced by a newer invitation to {invitation.email} (id {replaced_by}); "
                "revoke that one instead.",
                code="invitation_closed",
                details={"replaced_by": replaced_by},
            )
        raise Conflict(f"This invitation is already {state}.", code="invitation_closed")
    _revoke_invitation(access, invitation)
    return invitation


def find_invitation(token: str) -> Invitation | None:
    """The invitation a token names (any org: the token itself is the proof), or None."""
    return (
        Invitation.objects.unscoped("an invitation token identifies its org")
        .select_related("organization")
        .filter(digest=tokens.digest(token))
        .first()
    )


@transaction.atomic
def accept_invitation(*, user: Any, token: str) -> Membership:
    """Join the inviting org with the invited role; the signed-in address must be the invited one."""
    invitation = find_invitation(token)
    if invitation is None:
        raise HermesAPIError("This invitation link is not valid.", code="invitation_unknown", status_code=404)
    invitation = Invitation.objects.for_org(invitation.organization_id).select_for_update().get(pk=invitation.pk)
    state = invitation.state()
    if state != "pending":
        raise Conflict(f"This invitation is {state}; ask for a new one.", code=f"invitation_{state}")
    if invitation.email.lower() != user.email.lower():
        raise HermesAPIError(
            f"This invitation is for {invitation.email}; sign in with that address to accept it.",
            code="invitation_email_mismatch",
            status_code=403,
        )
    try:
        with transaction.atomic():
            membership = Membership.objects.create(
                organization_id=invitation.organization_id, user=user, role=invitation.role
            )
    except IntegrityError:
        raise Conflict("You are already a member of this organization.", code="already_member") from None
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit.record(
        "invitation.accepted", org=invitation.organization_id, actor=user, target=membership, role=invitation.role
    )
    return membership


# --- API keys -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    key: APIKey
    plaintext: str  # returned once to the caller; never stored


def grantable_scopes(access: Access) -> frozenset[str]:
    """Scopes `access` may put on a key: its role's scopes, and never more than the key it is acting through."""
    allowed = frozenset(SCOPES) & MATRIX.get(access.role, frozenset())
    return allowed & access.scopes if access.scopes is not None else allowed


def key_issue_action(access: Access) -> str:
    """What creating and rotating keys takes: through an API key `org:admin` (`keys:own` is a person's right,
    never a key's scope); for a person `keys:own` (developers, admins, owners)."""
    return "org:admin" if access.scopes is not None else "keys:own"


def key_read_action(access: Access) -> str | None:
    """What listing, reading and revoking keys takes: through an API key `org:admin`; for a person nothing
    beyond membership. `selectors.visible_api_keys` then shows admins every key and others the keys they
    created, whatever their role now: a developer demoted to member keeps keys that still work (narrowed to the
    member role), and revoking one only takes access away."""
    return "org:admin" if access.scopes is not None else None


def _own_key(access: Access, key: APIKey) -> bool:
    # A person's own key, acting as that person (a session): a key acting for its creator has no such right.
    return access.scopes is None and access.user is not None and key.created_by_id == access.user.pk


def can_rotate_key(access: Access, key: APIKey) -> bool:
    return access.allows("org:admin") or (access.allows("keys:own") and _own_key(access, key))


def can_revoke_key(access: Access, key: APIKey) -> bool:
    return access.allows("org:admin") or _own_key(access, key)


def _validate_scopes(access: Access, scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationError({"scopes": [f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(SCOPES)}."]})
    if not scopes:
        raise ValidationError({"scopes": ["Give the key at least one scope."]})
    beyond = sorted(set(scopes) - grantable_scopes(access))
    if beyond:
        raise ValidationError(
            {"scopes": [f"A key cannot exceed its creator: your access does not include {', '.join(beyond)}."]}
        )
    return sorted(set(scopes))


class Unset(Enum):
    """A key setting the request left out, as opposed to null (no expiry, no limit of its own): a key created
    through another key inherits that key's setting then."""

    UNSET = "unset"


UNSET = Unset.UNSET


def _api_moment(moment: datetime) -> str:
    """A moment as the API writes it (`2030-01-01T00:00:00Z`), so a message quoting one can be copied back."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _within_parent(
    access: Access, *, expires_at: datetime | Unset | None, rate_limit: int | Unset | None
) -> tuple[datetime | None, int | None, dict[str, list[str]]]:
    """(expires_at, rate limit, errors) of a key created by `access`. Through an API key (the parent) the new key
    neither outlives nor out-rates it, as its scopes never exceed the parent's: what the request leaves out is
    the parent's, and asking for a later expiry, none, a higher limit or none is refused, naming the parent's."""
    parent = access.api_key
    if parent is None:
        return (
            None if isinstance(expires_at, Unset) else expires_at,
            None if isinstance(rate_limit, Unset) else rate_limit,
            {},
        )
    expires_at = parent.expires_at if isinstance(expires_at, Unset) else expires_at
    rate_limit = parent.rate_limit_per_minute if isinstance(rate_limit, Unset) else rate_limit
    errors: dict[str, list[str]] = {}
    making = f"the API key making this request ({parent.display})"
    if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
        ends = _api_moment(parent.expires_at)
        asked = "never expire" if expires_at is None else f"expire at {_api_moment(expires_at)}"
        errors["expires_at"] = [
            f"This key would {asked}, but {making} expires at {ends}: a key cannot outlive the key that creates "
            f"it. Choose {ends} or earlier, or leave expires_at out to inherit it."
        ]
    limit = parent.rate_limit_per_minute
    if limit is not None and (rate_limit is None or rate_limit > limit):
        asked = "have no rate limit of its own" if rate_limit is None else f"allow {rate_limit} requests per minute"
        errors["rate_limit_per_minute"] = [
            f"This key would {asked}, but {making} is limited to {limit} requests per minute: a key cannot "
            f"out-rate the key that creates it. Choose {limit} or fewer, or leave rate_limit_per_minute out to "
            "inherit it."
        ]
    return expires_at, rate_limit, errors


def _successor_within_parent(access: Access, key: APIKey) -> None:
    """A successor keeps the rotated key's expiry and rate limit; issued through an API key, it must not outlive
    or out-rate that key either (as it cannot exceed its scopes). Refused rather than shortened: the successor
    would quietly stop before the key it replaces, and nothing is rotated."""
    parent = access.api_key
    if parent is None:
        return
    errors: dict[str, list[str]] = {}
    making = f"the API key making this request ({parent.display})"
    instead = (
        "Rotate it with a signed-in session (or a key that lives as long), or create a new key, which inherits "
        "the limits of the key making the request."
    )
    ends, expires_at = parent.expires_at, key.expires_at
    if ends is not None and (expires_at is None or expires_at > ends):
        kept = "never expire" if expires_at is None else f"expire at {_api_moment(expires_at)}"
        errors["expires_at"] = [
            f"The successor of {key.display} would keep its expiry and {kept}, but {making} expires at "
            f"{_api_moment(ends)}: a key cannot issue a key that outlives it. {instead}"
        ]
    limit, rate_limit = parent.rate_limit_per_minute, key.rate_limit_per_minute
    if limit is not None and (rate_limit is None or rate_limit > limit):
        kept = "have no rate limit of its own" if rate_limit is None else f"allow {rate_limit} requests per minute"
        errors["rate_limit_per_minute"] = [
            f"The successor of {key.display} would keep its rate limit and {kept}, but {making} is limited to "
            f"{limit} requests per minute: a key cannot issue a key that out-rates it. {instead}"
        ]
    if errors:
        raise ValidationError(errors)


def _issue(
    access: Access,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    rate_limit: int | None,
    parent: APIKey | None,
) -> IssuedKey:
    plaintext = tokens.new_api_key()
    key = APIKey.objects.create(
        organization=access.org,
        name=name,
        digest=tokens.digest(plaintext),
        prefix=plaintext[: len("hrm_") + 4],
        last_four=plaintext[-4:],
        scopes=scopes,
        created_by=access.user,
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit,
        parent=parent,
    )
    key.creator_role = access.role  # its creator is the member acting now: its state needs no query
    return IssuedKey(key, plaintext)


@transaction.atomic
def create_api_key(
    *,
    access: Access,
    name: str,
    scopes: list[str],
    expires_at: datetime | Unset | None = UNSET,
    rate_limit_per_minute: int | Unset | None = UNSET,
) -> IssuedKey:
    """Issue a key owned by the org and created by `access.user`. Its scopes never exceed the creator's; created
    through an API key, it neither exceeds, outlives nor out-rates that key (what is left out is inherited from
    it). None is no expiry / no limit of its own. Every field's problem is reported at once; nothing is written."""
    _require(access, key_issue_action(access))
    if access.user is None:
        raise HermesAPIError("Keys are created by a person.", code="no_user", status_code=403)
    errors: dict[str, Any] = {}
    try:
        scopes = _validate_scopes(access, scopes)
    except ValidationError as error:
        errors = error.update_error_dict(errors)
    if isinstance(expires_at, datetime) and expires_at <= timezone.now():
        errors.setdefault("expires_at", []).append("Choose a moment in the future.")
    expires_at, rate_limit, beyond = _within_parent(access, expires_at=expires_at, rate_limit=rate_limit_per_minute)
    for field, messages in beyond.items():
        errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    _lock_org(access.org)
    parent = _parent_of_new_key(access)
    issued = _issue(access, name=name, scopes=scopes, expires_at=expires_at, rate_limit=rate_limit, parent=parent)
    audit.record("api_key.created", access=access, target=issued.key, name=name, scopes=scopes)
    return issued


@transaction.atomic
def rotate_api_key(
    *,
    access: Access,
    key: APIKey,
    grace: timedelta = DEFAULT_ROTATION_GRACE,
    scopes: list[str] | None = None,
) -> IssuedKey:
    """Issue a successor (same name, scopes, expiry and rate limit unless given) and let the old key live `grace`
    longer. A key whose creator is gone may be rotated: the successor is issued under the rotating person."""
    if not can_rotate_key(access, key):
        _require(access, "org:admin")
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise ValidationError({"grace_seconds": [f"Choose between 0 and {int(MAX_ROTATION_GRACE.total_seconds())}."]})
    _lock_org(access.org)
    _check_still_valid(access)
    key = APIKey.objects.for_org(access.org).select_for_update().get(pk=key.pk)
    if key.rotated_to_id is not None:
        raise Conflict("This key was already rotated; rotate its successor instead.", code="key_already_rotated")
    lapsed = key.lapsed()
    if lapsed is not None:
        raise Conflict(f"This key is {lapsed}; create a new key instead.", code=f"key_{lapsed}")
    now = timezone.now()
    new_scopes = _validate_scopes(access, key.scopes if scopes is None else scopes)
    _successor_within_parent(access, key)
    successor = _issue(
        access,
        name=key.name,
        scopes=new_scopes,
        expires_at=key.expires_at,
        rate_limit=key.rate_limit_per_minute,
        parent=key.parent,
    )
    # The keys made with the old key now hang from its successor: revoking the successor revokes them.
    APIKey.objects.for_org(access.org).filter(parent=key).update(parent=successor.key)
    grace_end = now + grace
    key.expires_at = grace_end if key.expires_at is None else min(key.expires_at, grace_end)
    key.rotated_to = successor.key
    key.save(update_fields=["expires_at", "rotated_to"])
    # The successor's scopes always, and the old key's when the rotation changed them: a rotation that widens or
    # narrows a key's scopes is a change of access the trail has to show.
    scope_change = {} if set(new_scopes) == set(key.scopes) else {"old_key_scopes": sorted(key.scopes)}
    audit.record(
        "api_key.rotated",
        access=access,
        target=key,
        successor_id=successor.key.pk,
        old_key_expires_at=key.expires_at,
        scopes=new_scopes,
        **scope_change,
    )
    # Websockets opened with the old key close when its grace period ends, not at the expiry they started with.
    transaction.on_commit(partial(auth.shorten_streams, auth.api_key_group(key.pk), key.expires_at))
    return successor


@transaction.atomic
def revoke_api_key(*, access: Access, key: APIKey) -> APIKey:
    """Immediate: authentication reads the row on every request, so the next request with this key is a 401, and
    the websockets and SSE streams opened with it are closed (`auth.end_streams`; SSE finds out on its re-check)."""
    if not can_revoke_key(access, key):
        _require(access, "org:admin")
    return _revoke(key, access=access)


@transaction.atomic
def staff_revoke_api_key(*, key: APIKey, actor: Any) -> APIKey:
    """Staff (Django admin) revoking a key of any org, e.g. one reported leaked; audited under the staff member."""
    return _revoke(key, org=key.organization_id, actor=actor, by_staff=True)


def _revoke(key: APIKey, **who: Any) -> APIKey:
    """Revoke `key` and every key made with it, and theirs (each audited, naming the key it was revoked with)."""
    _lock_org(key.organization_id)  # see _check_still_valid
    key = APIKey.objects.for_org(key.organization_id).select_for_update().get(pk=key.pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit.record("api_key.revoked", target=key, name=key.name, **who)
    # Announced again when the key was already revoked: a cheap retry should the first announcement have been lost.
    transaction.on_commit(partial(auth.end_streams, auth.api_key_group(key.pk), "key_revoked"))
    keys = APIKey.objects.for_org(key.organization_id).filter(revoked_at=None)
    for child in keys.filter(parent=key).only("pk", "organization_id"):
        _revoke(child, **{**who, "revoked_with": str(key.pk)})
    # The key this one was rotated from, still working in its grace period, is the same credential: revoking the
    # live one after a leak must not leave the old token working (and minting keys) until the grace ends.
    for predecessor in keys.filter(rotated_to=key):
        if predecessor.lapsed() is None:
            _revoke(predecessor, **{**who, "revoked_with": str(key.pk)})
    return key


# Issuing, rotating and revoking keys take the org row first (`_lock_org`), as membership changes do: they run one
# at a time per org. A revocation's cascade reads the keys made with the revoked one; without the lock, a key being
# made with it by a request that authenticated a moment before the revoke was inserted after that read and lived
# on, working, under a revoked parent.


def _check_still_valid(access: Access) -> APIKey | None:
    """The API key `access` came with, read again under the org lock: a revocation (or the end of its grace
    period) that committed after this request authenticated refuses it here as its next request would be."""
    if access.api_key is None:
        return None
    token = APIKey.objects.for_org(access.org).get(pk=access.api_key.pk)
    refusal = auth.key_refusal(token, timezone.now())
    if refusal is not None:
        raise auth.APIKeyError(refusal.message, code=refusal.code)
    return token


def _parent_of_new_key(access: Access) -> APIKey | None:
    return _current(_check_still_valid(access))


def _current(key: APIKey | None) -> APIKey | None:
    """The key that stands for `key` now: its latest successor when it was rotated (the old token works on in its
    grace period), so a key made with the old token hangs from the key that outlives it."""
    while key is not None and key.rotated_to_id is not None:
        key = APIKey.objects.for_org(key.organization_id).get(pk=key.rotated_to_id)
    return key
