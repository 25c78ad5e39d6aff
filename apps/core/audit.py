"""`record(...)`: the audit row every action writes inside its transaction (`entry(...)`: the same row unsaved, for an
action that writes it in one statement with its own rows, apps.core.db.insert_together)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.core.models import AuditEvent
from apps.core.permissions import Access


def record(action: str, **fields: Any) -> AuditEvent:
    """Write one audit event: `entry(action, **fields)`, saved."""
    event = entry(action, **fields)
    event.save(force_insert=True)
    return event


def entry(
    action: str,
    *,
    org: Any = None,
    actor: Any = None,
    target: Any = None,
    access: Access | None = None,
    **details: Any,
) -> AuditEvent:
    """One audit event, not saved yet. `access` (when given) supplies org, actor and the API key used; `details` is
    stored as JSON."""
    if access is not None:
        org = org if org is not None else access.org
        actor = actor if actor is not None else access.user
    api_key = access.api_key if access is not None else None
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent(
        org_id=getattr(org, "pk", org),
        actor=user,
        api_key_id=getattr(api_key, "pk", None),
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "")) if target is not None else "",
        details=details,
    )


def events_for_org(org: Any) -> QuerySet[AuditEvent]:
    """An org's audit trail, newest first (the console's audit page and GET /api/v1/audit): the one read path.

    AuditEvent keys the org by its id rather than a foreign key (see apps.core.models), so it has no
    `objects.for_org(org)`; every read of an org's events starts here instead, and org-less events (a person's own
    account changes) are never in any org's trail."""
    org_id = getattr(org, "pk", org)
    if org_id is None:
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(org_id=org_id).order_by("-created_at", "-pk")
