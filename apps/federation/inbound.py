"""Receiving: dedup, policy, store, receipt. Shared by the HTTP inbox (after signature checks) and same-instance
delivery, so both have the same dedup, receipt and audit semantics.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.agents.models import Agent
from apps.core import jsonutil
from apps.core.metrics import FEDERATION_INBOUND
from apps.federation import policy, selectors
from apps.federation.actions import audit
from apps.federation.addresses import Address, InvalidAddress
from apps.federation.handlers import has_handler
from apps.federation.models import AuditEvent, InboxEntry, Message, MessageType, Peer
from apps.orgs import quotas
from apps.orgs.models import Organization

# The largest signed request a peer accepts (413 `too_large` past it). A sender keeps what it sends under it:
# `RESULT_DATA_BYTES` is what a task result's event data may take, the rest is room for the envelope around it.
MAX_MESSAGE_BYTES = 1024 * 1024
RESULT_DATA_BYTES = MAX_MESSAGE_BYTES - 16 * 1024


@dataclass
class InboundResult:
    status: int
    body: dict[str, Any]
    decision: str


def _error(status: int, code: str, message: str, decision: str) -> InboundResult:
    FEDERATION_INBOUND.labels(decision=decision).inc()
    return InboundResult(status, {"error": {"code": code, "message": message, "details": {}}}, decision)


@dataclass
class Envelope:
    id: uuid.UUID
    type: str
    sender: Address
    recipient: Address
    payload: dict[str, Any]
    correlation_id: uuid.UUID | None


def parse_envelope(data: Any, peer_name: str | None) -> Envelope:
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    try:
        message_id = uuid.UUID(str(data.get("id")))
    except ValueError:
        raise ValueError("'id' must be a UUID") from None
    if data.get("type") not in MessageType.values:
        raise ValueError(f"'type' must be one of {', '.join(MessageType.values)}")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        raise ValueError("'payload' must be an object")
    raw_corr = data.get("correlation_id")
    try:
        correlation = uuid.UUID(str(raw_corr)) if raw_corr else None
    except ValueError:
        raise ValueError("'correlation_id' must be a UUID or null") from None
    if "created_at" in data and not _is_timestamp(data["created_at"]):
        # Absent only from a hand-made message (every Hermes writes it); present, it is what it says it is.
        raise ValueError("'created_at' must be an ISO-8601 timestamp")
    try:
        sender = Address.from_wire(data.get("sender"), peer_name, "sender")
        recipient = Address.from_wire(data.get("recipient"), None, "recipient")
    except (ValueError, InvalidAddress) as exc:
        raise ValueError(str(exc)) from None
    return Envelope(message_id, data["type"], sender, recipient, payload, correlation)


def _is_timestamp(value: Any) -> bool:
    try:
        return isinstance(value, str) and parse_datetime(value) is not None
    except ValueError:  # the form of one, with a day or hour that does not exist
        return False


def _describe_link(link: Any) -> str:
    if isinstance(link, dict) and isinstance(link.get("from"), str) and isinstance(link.get("to"), str):
        return f"from '{link['from'][:60]}' to '{link['to'][:60]}'"
    return "in a form this instance does not understand"


def link_mismatch(peer: Peer, data: dict[str, Any]) -> str | None:
    """Why the message's signed direction binding does not fit the link it came in on, or None when it does.

    The sender signs `"link": {"from", "to"}`: our name for it (the receive path) and its name for us, that is our
    `name` and `local_name` for the link (delivery.link_binding). The key is the same both ways, so a message this
    instance sent to the peer verifies here too; its binding is the reverse one, and that is what refuses it when
    it is posted back at us. A message without `link` comes from a Hermes older than the binding and is accepted;
    one that carries it must match.

    A link whose two ends use the same name (we call the peer `x` and it calls us `x`) binds nothing: give them
    different names."""
    if "link" not in data:
        return None
    link = data["link"]

    def bound_to(sender: str, receiver: str) -> bool:
        # Only the two names count: a later Hermes may add to the binding without being refused by this one.
        return isinstance(link, dict) and link.get("from") == sender and link.get("to") == receiver

    if bound_to(peer.name, peer.local_name):
        return None
    ours = f"from '{peer.name}' to '{peer.local_name}'"
    if bound_to(peer.local_name, peer.name):
        return (
            f"the message is bound to the link {_describe_link(link)}: it is one this instance sent to "
            f"'{peer.name}', posted back to it (this link is {ours})"
        )
    return (
        f"the message is bound to the link {_describe_link(link)}, but this link is {ours}: the two sides name "
        "the link differently (compare name and local_name on both)"
    )


def _existing(peer: Peer | None, message_id: uuid.UUID) -> InboxEntry | None:
    return (
        InboxEntry.objects.unscoped("dedup is per link, before the recipient org is known")
        .filter(peer=peer, message_id=message_id)
        .first()
    )


def duplicate_of(peer: Peer, message_id: str) -> InboundResult | None:
    """The answer to a signed request from `peer` whose message was received before (its original receipt), or
    None for a new one. Its audit row is sampled (the first of each minute per message): a replay of a captured
    request within the timestamp tolerance wrote one row per request, while each message a sender retries is still
    on record."""
    try:
        entry = _existing(peer, uuid.UUID(message_id))
    except ValueError:
        return None  # not a message id: receive() says what is wrong with it
    if entry is None:
        return None
    sample = quotas.check_per_minute(
        f"federation-duplicates:{peer.pk}:{entry.message_id}", 1, "federation_duplicate_audit"
    )
    return _duplicate(entry, peer, audited=sample is not None and sample.allowed)


def _duplicate(entry: InboxEntry, peer: Peer | None, *, audited: bool = True) -> InboundResult:
    if audited:
        audit(
            AuditEvent.DUPLICATE,
            org=entry.organization_id and entry.organization,
            peer=peer,
            message_id=entry.message_id,
            reason="already received: original receipt returned",
        )
    FEDERATION_INBOUND.labels(decision="duplicate").inc()
    return InboundResult(200, {"receipt": entry.receipt, "duplicate": True}, "duplicate")


def _reply_reason(org: Organization, peer: Peer | None, envelope: Envelope) -> str | None:
    """Why the message is a reply within a conversation the org already admitted, which the policy is not asked
    about again (None: it is not one). Both directions of a cross-org task:

    - a task result correlated to a task request this org sent to that same org: the org chose to talk to it by
      sending the request;
    - the requester's cancel or follow-up of a task this org accepted from that org (and runs): accepting the
      request admitted the requester, and a rule added since must not keep the task running for nobody or
      waiting for an answer that is refused."""
    if envelope.correlation_id is None:
        return None
    if envelope.type == MessageType.TASK_RESULT:
        request = (
            Message.objects.for_org(org)
            .filter(pk=envelope.correlation_id, peer=peer, type=MessageType.TASK_REQUEST)
            .only("recipient")
            .first()
        )
        if request is not None and Address.parse(request.recipient).org == envelope.sender.org:
            return "reply to a request this org sent"
    elif envelope.type in (MessageType.TASK_CANCEL, MessageType.TASK_INPUT):
        link = selectors.federated_task_for(
            org, correlation_id=envelope.correlation_id, sender=envelope.sender, peer=peer
        )
        if link is not None:
            return "the requester's own relay for a task this org accepted"
    return None


def _has_agent(org: Organization, slug: str) -> bool:
    # The org's own agents: a federated agent row (another org's agent reached through us) is not a recipient.
    return Agent.objects.for_org(org).filter(slug=slug, federation_address="").exists()


def receive(*, peer: Peer | None, message_id: str, data: Any) -> InboundResult:
    """Process one (already authenticated) inbound message."""
    peer_name = peer.name if peer else None
    try:
        envelope = parse_envelope(data, peer_name)
    except ValueError as exc:
        audit(AuditEvent.REJECTED, peer=peer, reason=f"malformed message: {exc}")
        return _error(400, "invalid_message", str(exc), "rejected")
    if str(envelope.id) != message_id:
        audit(AuditEvent.REJECTED, peer=peer, message_id=envelope.id, reason="body id differs from webhook-id")
        return _error(400, "invalid_message", "the body's id must equal the webhook-id header", "rejected")
    if peer is not None and (mismatch := link_mismatch(peer, data)) is not None:
        # Checked before dedup and policy: the message is not the peer's to send, whatever it says.
        audit(AuditEvent.BAD_SIGNATURE, peer=peer, message_id=envelope.id, reason=mismatch)
        return _error(401, "wrong_link", mismatch, "bad_signature")

    existing = _existing(peer, envelope.id)
    if existing is not None:
        return _duplicate(existing, peer)

    org = Organization.objects.filter(slug=envelope.recipient.org).first()
    if org is None:
        audit(AuditEvent.REJECTED, peer=peer, message_id=envelope.id, reason=f"no org '{envelope.recipient.org}'")
        return _error(404, "unknown_recipient", f"No organization '{envelope.recipient.org}' here.", "rejected")
    if (reply := _reply_reason(org, peer, envelope)) is not None:
        decision = policy.Decision(True, reply)
    else:
        decision = policy.decide(org.pk, envelope.recipient.agent or "", envelope.sender)
    if not decision.allowed:
        audit(
            AuditEvent.POLICY_DENIED,
            org=org,
            peer=peer,
            message_id=envelope.id,
            reason=f"inbound from {envelope.sender}: {decision.reason}",
        )
        # The recipient as addressed: an agent-specific rule refuses that agent, not the whole org.
        refusal = f"{envelope.recipient} does not accept messages from {envelope.sender}."
        return _error(403, "policy_denied", refusal, "denied")
    agent = envelope.recipient.agent
    if agent and envelope.type == MessageType.MESSAGE and not _has_agent(org, agent):
        # Asked after the policy, so only a sender the org accepts learns which agents exist. Only plain messages:
        # a task request for an unknown agent is answered with a `rejected` result (the requester's task ends with
        # the reason), and replies go to whatever sender agent the request named, registered or not.
        audit(AuditEvent.REJECTED, org=org, peer=peer, message_id=envelope.id, reason=f"no agent '{agent}'")
        return _error(404, "unknown_recipient", f"{org.slug} has no agent '{agent}'.", "rejected")

    receipt = {
        "message_id": str(envelope.id),
        "status": "accepted",
        "recipient": str(envelope.recipient),
        "received_at": timezone.now().isoformat(),
    }
    try:
        with transaction.atomic():
            entry = InboxEntry.objects.create(
                organization=org,
                peer=peer,
                message_id=envelope.id,
                sender=str(envelope.sender),
                recipient_agent=envelope.recipient.agent or "",
                type=envelope.type,
                payload=envelope.payload,
                correlation_id=envelope.correlation_id,
                receipt=receipt,
                # A type without a handler (a plain message) is delivered by being stored: no job to run.
                handled_at=None if has_handler(envelope.type) else timezone.now(),
            )
            audit(AuditEvent.ACCEPTED, org=org, peer=peer, message_id=envelope.id, reason=f"from {envelope.sender}")
            if entry.handled_at is None:
                entry_id = entry.pk
                transaction.on_commit(lambda: _dispatch(entry_id))
    except IntegrityError:
        # The same message arrived twice at once (a retry racing a slow first attempt): the loser is a duplicate.
        existing = _existing(peer, envelope.id)
        if existing is None:  # pragma: no cover - the unique constraint is the only integrity rule here
            raise
        return _duplicate(existing, peer)
    FEDERATION_INBOUND.labels(decision="accepted").inc()
    return InboundResult(200, {"receipt": receipt, "duplicate": False}, "accepted")


def _dispatch(entry_id: int) -> None:
    """Type-specific handling runs on a worker so the receipt never waits for it (or fails because of it)."""
    from apps.federation.tasks import handle_inbound

    try:
        handle_inbound.delay(entry_id)
    except Exception:  # broker down: the message is stored; handling is re-driven by the sweeper
        import logging

        logging.getLogger(__name__).warning(
            "federation: could not enqueue handling of inbox entry %s", entry_id, exc_info=True
        )


def decode_body(body: bytes) -> Any:
    return jsonutil.loads(body.decode("utf-8"))
