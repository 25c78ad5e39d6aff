"""Scoped reads for federation, plus the instance-wide figures ops reports."""

from __future__ import annotations

from typing import Any

from django.db.models import Min, QuerySet
from django.utils import timezone

from apps.federation.addresses import Address, InvalidAddress
from apps.federation.models import (
    LIVE_KEY_STATES,
    DeliveryAttempt,
    FederatedTask,
    InboxEntry,
    KeyState,
    LinkKey,
    Message,
    MessageType,
    Outbox,
    OutboxStatus,
    Peer,
)

WAITING = (OutboxStatus.PENDING, OutboxStatus.FAILED, OutboxStatus.IN_FLIGHT)


def _live_key_rows(peer: Peer) -> QuerySet[LinkKey]:
    return LinkKey.objects.filter(peer=peer, state__in=LIVE_KEY_STATES)


def live_keys(peer: Peer) -> list[LinkKey]:
    """Keys that sign and verify on this link, current first (so a receiver trying keys in order hits it first)."""
    order = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}
    return sorted(_live_key_rows(peer), key=lambda k: order[KeyState(k.state)])


def live_secrets(peer: Peer) -> list[bytes]:
    return [key.secret() for key in live_keys(peer)]


def has_live_key(peer: Peer) -> bool:
    return _live_key_rows(peer).exists()


def peer_has_history(peer: Peer) -> bool:
    """Whether messages were sent over the link or received from it. Those rows are the delivery record (signed
    receipts, dedup state) and refer to the peer, so such a peer is disabled, never deleted."""
    sent = Message.objects.unscoped("a link's history spans every org").filter(peer=peer)
    received = InboxEntry.objects.unscoped("a link's history spans every org").filter(peer=peer)
    return sent.exists() or received.exists()


def _same_org(address: str | Address, other: str | Address) -> bool:
    try:
        a = address if isinstance(address, Address) else Address.parse(address)
        b = other if isinstance(other, Address) else Address.parse(other)
    except InvalidAddress:
        return False
    return a.org_address() == b.org_address()


def federated_task_for(
    org: Any, *, correlation_id: Any, sender: str | Address, peer: Peer | None
) -> FederatedTask | None:
    """Executor side: the task `org` runs for the request `correlation_id`, when `sender` speaks for the org that
    made the request, over the same link (None otherwise).

    The org, not the agent: a request may name a sender agent (`demo-echo.demo@paris`) while its cancel or
    follow-up comes from the org itself (`demo@paris`, as older Hermes versions relay them), and matching the exact
    sender dropped them. The org is what the link vouches for; its agents are names it chooses."""
    if correlation_id is None:
        return None
    links = (
        FederatedTask.objects.for_org(org).filter(correlation_id=correlation_id, inbox_entry__peer=peer).order_by("pk")
    )
    return next((link for link in links if _same_org(link.reply_to, sender)), None)


def request_entry_for(org: Any, *, correlation_id: Any, sender: str | Address, peer: Peer | None) -> InboxEntry | None:
    """Executor side: the task request `correlation_id` as `org` received it from `sender`'s org over `peer`."""
    if correlation_id is None:
        return None
    entries = InboxEntry.objects.for_org(org).filter(
        message_id=correlation_id, peer=peer, type=MessageType.TASK_REQUEST
    )
    return next((entry for entry in entries if _same_org(entry.sender, sender)), None)


def cancel_before_request(request: InboxEntry) -> InboxEntry | None:
    """Executor side: a task_cancel for the task request `request` that its sender's org sent over the same link and
    that arrived before the request did (the two travel separately, so a request still in flight when its task
    was canceled can come second)."""
    entries = InboxEntry.objects.for_org(request.organization).filter(
        correlation_id=request.message_id, peer=request.peer, type=MessageType.TASK_CANCEL
    )
    return next((entry for entry in entries if _same_org(entry.sender, request.sender)), None)


# Attempt errors (as apps.federation.delivery writes them) of attempts that failed before the request was sent: no
# connection was made (refused, DNS failure, connect timeout), or nothing was sent at all (no link key).
_NOT_SENT_PREFIXES = ("ConnectError:", "timeout: ConnectTimeout")
_NOT_SENT_MARK = "has no live key"


def may_have_arrived(row: Outbox) -> bool:
    """Whether any attempt to deliver `row` may have reached the peer: one that got an HTTP answer, or failed
    after the connection was made (a timeout mid-request, a reset) — the peer may have stored the message though
    no receipt came back. False when every attempt failed before sending (or none was made)."""
    attempts = DeliveryAttempt.objects.for_org(row.organization_id).filter(outbox=row)
    return any(
        http_status is not None or not (error.startswith(_NOT_SENT_PREFIXES) or _NOT_SENT_MARK in error)
        for http_status, error in attempts.values_list("http_status", "error")
    )


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
