from __future__ import annotations

from typing import Any

from apps.core.permissions import Access
from apps.orgs.models import Membership

SESSION_ORG_KEY = "hermes_org_id"


def memberships_of(user: Any) -> list[Membership]:
    return list(
        Membership.objects.unscoped("a user's own memberships span orgs")
        .filter(user=user)
        .select_related("organization")
        .order_by("organization__name")
    )


def session_access(request: Any, user: Any) -> Access | None:
    """The org a signed-in person acts for: X-Hermes-Org (slug) header, else the session's current org,
    else their first org. None when they belong to no org."""
    slug = request.headers.get("X-Hermes-Org") if hasattr(request, "headers") else None
    memberships = memberships_of(user)
    chosen: Membership | None = None
    if slug:
        chosen = next((m for m in memberships if m.organization.slug == slug), None)
    else:
        org_id = request.session.get(SESSION_ORG_KEY) if hasattr(request, "session") else None
        chosen = next((m for m in memberships if m.organization_id == org_id), None)
        chosen = chosen or (memberships[0] if memberships else None)
    if chosen is None:
        return None
    return Access(org=chosen.organization, role=chosen.role, user=user)
