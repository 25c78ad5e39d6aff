"""`record(...)`: the audit row every action writes inside its transaction."""

from __future__ import annotations

from typing import Any

from apps.core.models import AuditEvent
from apps.core.permissions import Access


def record(
    action: str,
    *,
    org: Any = None,
    actor: Any = None,
    target: Any = None,
    access: Access | None = None,
    **details: Any,
) -> AuditEvent:
    """Write one audit event. `access` (when given) supplies org, actor and the API key used."""
    if access is not None:
        org = org if org is not None else access.org
        actor = actor if actor is not None else access.user
    api_key = access.api_key if access is not None else None
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        org_id=getattr(org, "pk", org),
        actor=user,
        api_key_id=getattr(api_key, "pk", None),
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "")) if target is not None else "",
        details=details,
    )


def events_for_org(org: Any) -> Any:
    """An org's audit trail, newest first (the console's audit page)."""
    return AuditEvent.objects.filter(org_id=getattr(org, "pk", org)).order_by("-created_at", "-pk")
