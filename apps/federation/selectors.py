"""Scoped reads for federation, plus the instance-wide figures ops reports."""

from __future__ import annotations

from typing import Any

from django.db.models import Min, QuerySet
from django.utils import timezone

from apps.federation.models import LIVE_KEY_STATES, KeyState, LinkKey, Outbox, OutboxStatus, Peer

WAITING = (OutboxStatus.PENDING, OutboxStatus.FAILED, OutboxStatus.IN_FLIGHT)


def live_keys(peer: Peer) -> list[LinkKey]:
    """Keys that sign and verify on this link, current first (so a receiver trying keys in order hits it first)."""
    order = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}
    keys = list(LinkKey.objects.filter(peer=peer, state__in=LIVE_KEY_STATES))
    return sorted(keys, key=lambda k: order[KeyState(k.state)])


def live_secrets(peer: Peer) -> list[bytes]:
    return [key.secret() for key in live_keys(peer)]


def dead_letters(org: Any) -> QuerySet[Outbox]:
    return Outbox.objects.for_org(org).filter(status=OutboxStatus.DEAD).select_related("message", "message__peer")


def delivery_backlog() -> dict[str, Any]:
    """Instance-wide delivery health for ops: rows still to deliver, dead letters, and the age of the oldest
    waiting row (None when nothing waits)."""
    rows = Outbox.objects.unscoped("instance-wide health figures")
    waiting = rows.filter(status__in=WAITING)
    oldest = waiting.aggregate(oldest=Min("queued_at"))["oldest"]
    return {
        "outbox_backlog": waiting.count(),
        "dead_letters": rows.filter(status=OutboxStatus.DEAD).count(),
        "oldest_pending_age_s": (timezone.now() - oldest).total_seconds() if oldest else None,
    }
