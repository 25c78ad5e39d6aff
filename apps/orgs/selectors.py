from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from apps.core.audit import events_for_org
from apps.core.models import AuditEvent
from apps.core.permissions import Access
from apps.orgs.models import APIKey, Invitation, Membership, Organization

SESSION_ORG_KEY = "hermes_org_id"


def memberships_of(user: Any, *, org: Any = None) -> list[Membership]:
    """`user`'s memberships, by org name; with `org`, only the one in that org (what an API key of it may show)."""
    memberships = Membership.objects.unscoped("a user's own memberships span orgs").filter(user=user)
    if org is not None:
        memberships = memberships.filter(organization=org)
    return list(memberships.select_related("organization").order_by("organization__name"))


def other_org_holding(user: Any, current_org_id: Any, holds: Callable[[Any], bool]) -> Organization | None:
    """The first org of `user`'s, other than the current one, for which `holds(org)` is true (a page's object, a
    task): where a link or a tab open since an org switch belongs. None when no org of theirs holds it."""
    for membership in memberships_of(user):
        if membership.organization_id != current_org_id and holds(membership.organization):
            return membership.organization
    return None


def session_access(request: Any, user: Any) -> Access | None:
    """The org a signed-in person acts for: X-Hermes-Org (slug) header, else the session's current org,
    else the org they joined first (their oldest membership). None when they belong to no org."""
    slug = request.headers.get("X-Hermes-Org") if hasattr(request, "headers") else None
    memberships = memberships_of(user)
    chosen: Membership | None = None
    if slug:
        chosen = next((m for m in memberships if m.organization.slug == slug), None)
    else:
        org_id = request.session.get(SESSION_ORG_KEY) if hasattr(request, "session") else None
        chosen = next((m for m in memberships if m.organization_id == org_id), None)
        # Not the first by name: renaming any of their orgs would silently move a session that never picked one
        # (an API client signed in with a session) to another org. The oldest membership stays put.
        chosen = chosen or min(memberships, key=lambda m: (m.created_at, m.pk), default=None)
    if chosen is None:
        return None
    return Access(org=chosen.organization, role=chosen.role, user=user)


def api_keys(org: Any) -> QuerySet[APIKey]:
    """The org's keys with what their `state()` needs in the same query: the creator (active?) and the creator's
    current role in the org (`creator_role`, None once they are no longer the member who made it: the key is
    `creator_gone`, see APIKey.state)."""
    creator_role = Membership.objects.filter(
        organization=OuterRef("organization"), user=OuterRef("created_by"), created_at__lte=OuterRef("created_at")
    )
    return (
        APIKey.objects.for_org(org)
        .select_related("created_by", "rotated_to")
        .annotate(creator_role=Subquery(creator_role.values("role")[:1]))
    )


def visible_api_keys(access: Access) -> QuerySet[APIKey]:
    """The keys `access` may see, in the API and the console alike: every key of the org with `org:admin`, else the
    keys the person created. Whatever their role now: a developer demoted to member keeps keys that still work
    (narrowed to the member role), and must be able to find and revoke them."""
    keys = api_keys(access.org)
    if access.allows("org:admin"):
        return keys
    return keys.filter(created_by=access.user) if access.user is not None else keys.none()


# --- Invitations -----------------------------------------------------------------------------------------------

# Invitation.state(), as filters: what `GET /invitations?state=` accepts.
INVITATION_STATES: dict[str, Callable[[datetime], Q]] = {
    "pending": lambda now: Q(accepted_at=None, revoked_at=None, expires_at__gt=now),
    "accepted": lambda now: Q(accepted_at__isnull=False),
    "revoked": lambda now: Q(accepted_at=None, revoked_at__isnull=False),
    "expired": lambda now: Q(accepted_at=None, revoked_at=None, expires_at__lte=now),
}


def invitations(org: Any, states: Collection[str] = ()) -> QuerySet[Invitation]:
    """The org's invitations with their inviter; `states`: only those in any of these (keys of INVITATION_STATES)."""
    rows = Invitation.objects.for_org(org).select_related("invited_by")
    if not states:
        return rows
    now = timezone.now()
    wanted = Q()
    for state in states:
        wanted |= INVITATION_STATES[state](now)
    return rows.filter(wanted)


def invitation_replaced_by(invitation: Invitation) -> int | None:
    """The id of the invitation that replaced this revoked one (re-inviting its address), else None. Only its audit
    row tells: the invitation's own row looks the same however it was revoked."""
    event = (
        events_for_org(invitation.organization_id)
        .filter(
            action="invitation.revoked",
            target_type="invitation",
            target_id=str(invitation.pk),
            details__has_key="replaced_by",
        )
        .first()
    )
    return None if event is None else int(event.details["replaced_by"])


# --- The audit log ----------------------------------------------------------------------------------------------


def audit_events(org: Any, actions: Collection[str] = ()) -> QuerySet[AuditEvent]:
    """The org's audit trail, newest first, with who acted (console page and API alike); `actions`: only these."""
    events = events_for_org(org).select_related("actor")
    return events.filter(action__in=list(actions)) if actions else events


def audit_actions(org: Any) -> list[str]:
    """The actions the org's trail holds, for the console's filter (the list is open: every app names its own)."""
    return list(events_for_org(org).order_by("action").values_list("action", flat=True).distinct())


def api_keys_of_events(org: Any, events: Iterable[AuditEvent]) -> dict[int, APIKey]:
    """The org's keys that made `events` or that they are about, by id, in one query: an audit row keeps only the
    key's id (core imports no domain app), and the log shows the key as people recognise it (`hrm_ab12…wxyz`)."""
    ids: set[int] = set()
    for event in events:
        if event.api_key_id is not None:
            ids.add(event.api_key_id)
        if event.target_type == "apikey" and event.target_id.isascii() and event.target_id.isdigit():
            ids.add(int(event.target_id))
    if not ids:
        return {}
    keys = APIKey.objects.for_org(org).filter(pk__in=ids).only("id", "name", "prefix", "last_four")
    return {key.pk: key for key in keys}
