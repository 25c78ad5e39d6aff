"""Every federation state change: link keys, contacts, policies, sending, delivery transitions and the DLQ.

Each runs in a transaction, writes its audit row and schedules side effects (Celery) on commit. Traffic and link
keys go to federation's own log (FederationAuditEvent, `audit` below); what people change in an org's settings
(contacts, policies) goes to the org's audit log (apps.core.audit), with the peers, which belong to no org.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from apps.agents import selectors as agent_selectors
from apps.core import audit as org_audit
from apps.core.errors import Conflict, HermesAPIError, refusal
from apps.core.http import OutboundBlocked, check_url
from apps.core.metrics import (
    FEDERATION_DELIVERIES,
    FEDERATION_DELIVERY_LATENCY,
    FEDERATION_RETRIES,
)
from apps.core.permissions import Access
from apps.federation import policy, selectors
from apps.federation.addresses import Address, InvalidAddress, is_slug, pattern_peer, validate_pattern
from apps.federation.models import (
    LIVE_KEY_STATES,
    AttemptOutcome,
    AuditEvent,
    Contact,
    DeliveryAttempt,
    FederationAuditEvent,
    KeyState,
    LinkKey,
    Message,
    MessageType,
    Outbox,
    OutboxStatus,
    Peer,
    PeerStatus,
    Policy,
    RemoteTask,
)
from apps.orgs.models import Organization

logger = logging.getLogger(__name__)

# Claims tolerate a Celery ETA firing this early, instead of leaving the row to the next sweep.
CLAIM_SLACK = timedelta(milliseconds=500)


def audit(
    event: str,
    *,
    org: Any = None,
    peer: Peer | None = None,
    message_id: Any = None,
    reason: str = "",
    actor: Any = None,
    detail: dict[str, Any] | None = None,
) -> FederationAuditEvent:
    return FederationAuditEvent.objects.create(
        organization=org,
        event=event,
        peer=peer,
        message_id=message_id,
        reason=reason[:300],
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        detail=detail or {},
    )


# --- Peers and link keys ----------------------------------------------------------------------------------


@transaction.atomic
def create_peer(*, name: str, base_url: str, local_name: str, actor: Any = None) -> Peer:
    if Peer.objects.filter(name=name).exists():
        raise Conflict(f"A peer named '{name}' already exists.", code="peer_exists")
    peer = Peer(name=name, base_url=base_url.rstrip("/"), local_name=local_name)
    # The model's own validators (slugs, URL) for every caller: the API and console forms check them too, but
    # the operator command and other code reach the table only through here.
    peer.full_clean(validate_unique=False)
    peer.save()
    # A link belongs to the instance, not to an org: the row is in no org's log (staff read it in the admin).
    org_audit.record(
        "peer.created", actor=actor, target=peer, name=peer.name, base_url=peer.base_url, local_name=local_name
    )
    return peer


def delivery_blocked_reason(peer: Peer) -> str | None:
    """What the outbound SSRF guard would say about the peer's URL with today's allowlist (None: nothing it can
    tell without DNS). Adding such a peer is allowed — the allowlist may be about to change — but said at once."""
    try:
        check_url(peer.base_url)
    except OutboundBlocked as exc:
        return str(exc)
    return None


@transaction.atomic
def set_peer_status(peer: Peer, status: str, *, actor: Any = None) -> Peer:
    """Disabling a link stops its deliveries (its outbox waits: `_deliverable`); enabling it sends what waited."""
    previous = Peer.objects.select_for_update().values_list("status", flat=True).get(pk=peer.pk)
    peer.status = PeerStatus(status)
    peer.save(update_fields=["status", "updated_at"])
    if previous != peer.status:
        org_audit.record("peer.status_changed", actor=actor, target=peer, name=peer.name, status=[previous, status])
    if peer.status == PeerStatus.ACTIVE:
        _resume_waiting(peer)
    return peer


@transaction.atomic
def set_peer_base_url(peer: Peer, base_url: str, *, actor: Any = None) -> Peer:
    """Point a link at the peer's new address (it moved host). Audited as its creation is: where this instance
    sends every org's messages for that peer is the link's most consequential setting."""
    locked = Peer.objects.select_for_update().get(pk=peer.pk)
    previous = locked.base_url
    locked.base_url = base_url.rstrip("/")
    locked.full_clean(validate_unique=False)  # the model's URL rules, as create_peer checks them
    if locked.base_url != previous:
        locked.save(update_fields=["base_url", "updated_at"])
        org_audit.record(
            "peer.updated", actor=actor, target=locked, name=locked.name, base_url=[previous, locked.base_url]
        )
    peer.base_url = locked.base_url
    return locked


@transaction.atomic
def delete_peer(peer: Peer, *, actor: Any = None) -> None:
    """Delete a link that carried no messages. One with history is refused (409): its messages and inbox entries
    are the delivery record and refer to it, so it is disabled instead (set_peer_status)."""
    # Locked first: a message being sent over the link meanwhile waits for this, then finds no peer.
    locked = Peer.objects.select_for_update().get(pk=peer.pk)
    if selectors.peer_has_history(locked):
        raise Conflict(
            f"The peer '{locked.name}' has message history (sent messages or inbox entries, which are the delivery "
            "record), so it cannot be deleted: disable the link instead.",
            code="peer_has_history",
        )
    org_audit.record(
        "peer.deleted",
        actor=actor,
        target=locked,
        name=locked.name,
        base_url=locked.base_url,
        local_name=locked.local_name,
    )
    locked.delete()


def _resume_waiting(peer: Peer, *, including_backoff: bool = False) -> None:
    """Hand the link's waiting rows to workers once the transaction commits: what held them back is gone."""
    now = timezone.now()
    waiting = _outbox_rows().filter(status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED], message__peer=peer)
    # Due now: attempts that came due while the link could not send would otherwise wait for their next sweep (and,
    # `including_backoff`, retries the missing condition itself put off).
    due = waiting if including_backoff else waiting.filter(next_attempt_at__lt=now)
    due.update(next_attempt_at=now)
    ids = list(waiting.values_list("pk", flat=True))

    def resume() -> None:
        for outbox_id in ids:
            _enqueue(outbox_id)

    transaction.on_commit(resume)


def no_live_key_reason(peer: Peer) -> str:
    """Why nothing can be sent over a link without keys: said locally, instead of sending it unsigned and having
    the peer answer 401 bad_signature, which blamed the peer."""
    # Said to org members too, who cannot add keys: who can, and how.
    return (
        f"link '{peer.name}' has no live key; the instance's operators add one (federation_keys add, or staff "
        "on the console's Peers page)"
    )


def _deliverable() -> Q:
    """Rows a worker may attempt: local ones, and those of an active link (a disabled link's outbox waits)."""
    return Q(message__peer__isnull=True) | Q(message__peer__status=PeerStatus.ACTIVE)


def _locked(peer: Peer) -> list[LinkKey]:
    # Lock the peer row: concurrent rotations of one link serialise here.
    Peer.objects.select_for_update().get(pk=peer.pk)
    return list(LinkKey.objects.filter(peer=peer).order_by("version"))


@transaction.atomic
def add_key(peer: Peer, *, secret: bytes | None = None, actor: Any = None) -> LinkKey:
    """Add K_n+1 (or the first key, which becomes current at once). Both sides must add the same secret."""
    import secrets as _secrets

    keys = _locked(peer)
    waiting = next((k for k in keys if k.state == KeyState.NEXT), None)
    if waiting is not None:
        raise Conflict(
            f"k{waiting.version} is already waiting to be promoted: promote or retire it first.", code="key_pending"
        )
    secret = secret if secret is not None else _secrets.token_bytes(32)
    _refuse_reused_secret(peer, keys, secret)
    has_current = any(k.state == KeyState.CURRENT for k in keys)
    had_live_key = any(k.state in LIVE_KEY_STATES for k in keys)
    key = LinkKey(
        peer=peer,
        version=max((k.version for k in keys), default=0) + 1,
        state=KeyState.NEXT if has_current else KeyState.CURRENT,
    )
    if not has_current:
        key.promoted_at = timezone.now()
    key.set_secret(secret)
    key.save()
    audit(
        AuditEvent.KEY_ADDED,
        peer=peer,
        actor=actor,
        reason=f"k{key.version} added as {key.state}",
        detail={"version": key.version, "fingerprint": key.fingerprint},
    )
    if not had_live_key and peer.status == PeerStatus.ACTIVE:
        # Replies queued while the link had no key (a task's results, its cancel) were held back in backoff
        # (see delivery._over_http): they go now rather than at their next retry.
        _resume_waiting(peer, including_backoff=True)
    return key


def _refuse_reused_secret(peer: Peer, keys: list[LinkKey], secret: bytes) -> None:
    """A secret the link already has (or had) is refused: a retired key's would make it verify again, which a
    rotation promises never happens, and a live key's would only be the same key twice. Compared by fingerprint,
    the one form of a secret every key keeps in the clear."""
    fingerprint = LinkKey.fingerprint_of(secret)
    same = next((k for k in keys if k.fingerprint == fingerprint), None)
    if same is None:
        return
    details: dict[str, Any] = {"version": same.version, "state": same.state, "fingerprint": fingerprint}
    if same.state == KeyState.RETIRED:
        details["retired_at"] = same.retired_at.isoformat() if same.retired_at else None
        when = f" on {same.retired_at:%Y-%m-%d %H:%M:%S} UTC" if same.retired_at else ""
        raise Conflict(
            f"This secret is that of k{same.version} of {peer.name}, retired{when} (fingerprint {fingerprint}): a "
            "retired key never signs or verifies again. Add the next key with a new secret (leave it out and "
            "Hermes generates one).",
            code="key_retired",
            details=details,
        )
    raise Conflict(
        f"This secret is already k{same.version} of {peer.name} ({same.state}, fingerprint {fingerprint}): the "
        "next key needs a new secret (leave it out and Hermes generates one).",
        code="key_exists",
        details=details,
    )


@transaction.atomic
def promote_key(peer: Peer, *, actor: Any = None) -> LinkKey:
    """K_n+1 becomes current; K_n stays valid (previous) until retired, so in-flight traffic signed by the peer
    with only K_n keeps verifying."""
    keys = _locked(peer)
    nxt = next((k for k in keys if k.state == KeyState.NEXT), None)
    if nxt is None:
        raise Conflict("There is no next key to promote: add one first.", code="no_next_key")
    previous = next((k for k in keys if k.state == KeyState.PREVIOUS), None)
    if previous is not None:
        raise Conflict(
            f"k{previous.version} is still the previous key: retire it before promoting again.", code="key_previous"
        )
    now = timezone.now()
    LinkKey.objects.filter(peer=peer, state=KeyState.CURRENT).update(state=KeyState.PREVIOUS)
    nxt.state = KeyState.CURRENT
    nxt.promoted_at = now
    nxt.save(update_fields=["state", "promoted_at"])
    audit(
        AuditEvent.KEY_PROMOTED,
        peer=peer,
        actor=actor,
        reason=f"k{nxt.version} is now current",
        detail={"version": nxt.version, "fingerprint": nxt.fingerprint},
    )
    return nxt


@transaction.atomic
def retire_key(peer: Peer, *, version: int | None = None, actor: Any = None) -> LinkKey:
    """Retire the previous key (default) or a specific non-current version. A retired key never verifies again."""
    keys = _locked(peer)
    if version is None:
        key = next((k for k in keys if k.state == KeyState.PREVIOUS), None)
        if key is None:
            raise Conflict("There is no previous key to retire.", code="no_previous_key")
    else:
        key = next((k for k in keys if k.version == version), None)
        if key is None:
            raise HermesAPIError(f"Peer {peer.name} has no key k{version}.", code="not_found", status_code=404)
        if key.state == KeyState.CURRENT:
            raise Conflict("The current key cannot be retired: promote its successor first.", code="key_current")
        if key.state == KeyState.RETIRED:
            raise Conflict(f"k{version} is already retired.", code="key_retired")
    key.state = KeyState.RETIRED
    key.retired_at = timezone.now()
    key.save(update_fields=["state", "retired_at"])
    audit(
        AuditEvent.KEY_RETIRED,
        peer=peer,
        actor=actor,
        reason=f"k{key.version} retired",
        detail={"version": key.version, "fingerprint": key.fingerprint},
    )
    return key


# --- Contacts and policies --------------------------------------------------------------------------------


def _address_or_400(text: str, field: str = "address") -> Address:
    try:
        return Address.parse(text)
    except InvalidAddress as exc:
        raise HermesAPIError(str(exc), code="invalid_address", details={field: [str(exc)]}) from exc


# Contacts and policies are written to the org's audit log (`org_audit`), with what they say: `access` is the
# request's (console, API: the log then names the API key too), or staff's in the admin
# (apps.core.permissions.staff_access); None for the system (seeds, commands).


@transaction.atomic
def create_contact(*, org: Any, name: str, address: str, notes: str = "", access: Access | None = None) -> Contact:
    canonical = str(_address_or_400(address))
    if Contact.objects.for_org(org).filter(address=canonical).exists():
        raise Conflict(f"{canonical} is already in the address book.", code="contact_exists")
    contact = Contact.objects.create(organization=org, name=name, address=canonical, notes=notes)
    org_audit.record("contact.created", org=org, access=access, target=contact, name=name, address=canonical)
    return contact


@transaction.atomic
def update_contact(contact: Contact, *, name: str, notes: str, access: Access | None = None) -> Contact:
    """Rename an entry or change its notes (the admin's edit). The address is what the entry is: a different one
    is another contact."""
    locked = Contact.objects.for_org(contact.organization_id).select_for_update().get(pk=contact.pk)
    changes = {field: [getattr(locked, field), value] for field, value in (("name", name), ("notes", notes))}
    changes = {field: change for field, change in changes.items() if change[0] != change[1]}
    if changes:
        locked.name, locked.notes = name, notes
        locked.save(update_fields=["name", "notes"])
        org_audit.record(
            "contact.updated",
            org=locked.organization_id,
            access=access,
            target=locked,
            address=locked.address,
            changes=changes,
        )
    return locked


@transaction.atomic
def delete_contact(contact: Contact, *, access: Access | None = None) -> None:
    """Remove an address-book entry (policies decide who may talk to whom; a contact is only a name for it)."""
    # Recorded first, while the row (the event's target) still has its id.
    org_audit.record(
        "contact.deleted",
        org=contact.organization_id,
        access=access,
        target=contact,
        name=contact.name,
        address=contact.address,
    )
    contact.delete()


def policies_changed(org_id: int) -> None:
    # Now (so this transaction's own later sends see the change) and again after commit (so a decision cached by
    # another thread from the pre-commit state does not outlive it in this process); other processes learn of it
    # from the bumped generation.
    policy.clear_cache(org_id)

    def committed() -> None:
        policy.clear_cache(org_id)
        policy.bump_generation(org_id)

    transaction.on_commit(committed)


def check_local_agent(org: Any, value: str, field: str = "local_agent") -> str:
    """A policy's `local_agent` (or a message's `sender_agent`, `field`): empty (the whole org) or the slug of one
    of the org's own agents, lower-cased as addresses are (policies are asked with the slug from an address, so
    `Demo-Echo` was stored and never matched, and a slug of no agent guarded nothing). Returns the canonical value
    or raises a 400 naming the field."""
    slug = value.strip().lower()
    if not slug:
        return ""
    # A federated agent row is the org's way to reach someone else's agent: it neither sends nor receives as us.
    own = agent_selectors.org_agents(org).filter(federation_address="")
    if is_slug(slug) and own.filter(slug=slug).exists():
        return slug
    reason = (
        f"{org.slug} has no agent '{value[:80]}': {field} is the slug of one of the organization's own agents "
        "(as on the Agents page), or empty for the whole organization."
    )
    raise HermesAPIError(reason, code="unknown_agent", details={field: [reason]})


@dataclass(frozen=True)
class SavedPolicy:
    rule: Policy
    # The effect of the rule this one replaced (the pair had a rule that said something else), else None: a
    # replaced rule is said where it is saved ("allow demo", then "deny Demo", silently turned the allow round).
    replaced: str | None = None
    created: bool = False  # the pair had no rule: the API's 201, where a replaced or unchanged rule is a 200


@transaction.atomic
def save_policy(
    *, org: Any, remote: str, effect: str, local_agent: str = "", reason: str = "", access: Access | None = None
) -> SavedPolicy:
    """Create the rule for (local agent, remote pattern), or replace the one the pair has."""
    try:
        pattern = validate_pattern(remote)
    except InvalidAddress as exc:
        raise HermesAPIError(str(exc), code="invalid_address", details={"remote": [str(exc)]}) from exc
    local_agent = check_local_agent(org, local_agent)
    pair = {"local_agent": local_agent, "remote": pattern}
    # Locked, so two saves of one pair run one at a time and each knows what it replaces.
    rule, created = (
        Policy.objects.for_org(org)
        .select_for_update()
        .get_or_create(organization=org, **pair, defaults={"effect": effect, "reason": reason})
    )
    replaced = None
    if created:
        org_audit.record("policy.created", org=org, access=access, target=rule, **pair, effect=effect, reason=reason)
    else:
        changes = {
            field: [getattr(rule, field), value]
            for field, value in (("effect", effect), ("reason", reason))
            if getattr(rule, field) != value
        }
        if not changes:
            return SavedPolicy(rule)  # the same rule again: nothing to write, log or announce
        replaced = rule.effect
        rule.effect, rule.reason = effect, reason
        rule.save(update_fields=["effect", "reason"])
        org_audit.record("policy.updated", org=org, access=access, target=rule, **pair, effect=effect, changes=changes)
    policies_changed(org.pk)
    return SavedPolicy(rule, replaced, created=created)


def unknown_peer_warning(pattern: str, peers: Collection[str] | None = None) -> str | None:
    """What a saved rule's `remote` names that is not here: a peer this instance has no link to (a typo, or one
    not added yet). Saved all the same — the peer may be added next — but said, as a peer's delivery_warning is.
    `peers`: the instance's peer names, when the caller has them (a list of rules asks once, not per rule)."""
    name = pattern_peer(pattern)
    if name is None or (name in peers if peers is not None else Peer.objects.filter(name=name).exists()):
        return None
    return f"No peer named '{name}' is configured on this instance: the rule matches nothing until one is added."


def set_policy(
    *, org: Any, remote: str, effect: str, local_agent: str = "", reason: str = "", access: Access | None = None
) -> Policy:
    """`save_policy`, for callers that need only the rule (the API's serializer, seeds)."""
    saved = save_policy(org=org, remote=remote, effect=effect, local_agent=local_agent, reason=reason, access=access)
    return saved.rule


@transaction.atomic
def delete_policy(rule: Policy, *, access: Access | None = None) -> None:
    org_id = rule.organization_id
    org_audit.record(
        "policy.deleted",
        org=org_id,
        access=access,
        target=rule,
        local_agent=rule.local_agent,
        remote=rule.remote,
        effect=rule.effect,
        reason=rule.reason,
    )
    rule.delete()
    policies_changed(org_id)


# --- Sending ----------------------------------------------------------------------------------------------

# What users may send themselves (API, console, `federation_send`). The protocol types are written only by
# federation: a hand-made task_request would run a task on the peer outside remote tasks (no Task, no RemoteTask
# to receive its results), and a task_result, task_cancel, task_input or receipt would forge a protocol step.
USER_MESSAGE_TYPES = (MessageType.MESSAGE,)


def check_user_message_type(value: str) -> str:
    if value in USER_MESSAGE_TYPES:
        return value
    allowed = ", ".join(f"'{t}'" for t in USER_MESSAGE_TYPES)
    reason = (
        f"'{value[:40]}' cannot be sent as a message: only {allowed} can. To have another org's agent run a task, "
        "use remote tasks: POST /api/v1/federation/remote-tasks, the console's Federation → Remote tasks, or "
        "POST /api/v1/tasks on the agent's federated address."
    )
    raise HermesAPIError(reason, code="invalid", details={"type": [reason]})


def _enqueue(outbox_id: int, countdown: float = 0.0) -> None:
    """Hand the row to a worker. A broker failure is logged, not raised: the sweeper finds the row anyway."""
    from apps.federation.tasks import deliver

    try:
        deliver.apply_async((outbox_id,), countdown=max(0.0, countdown))
    except Exception:
        logger.warning("federation: could not enqueue outbox %s; the sweeper will pick it up", outbox_id)


def send_message(
    *,
    org: Any,
    recipient: str | Address,
    payload: dict[str, Any],
    type: str = MessageType.MESSAGE,
    sender_agent: str = "",
    correlation_id: Any = None,
    actor: Any = None,
    reply: bool = False,
) -> Message:
    """Write the message and its outbox row in one transaction; delivery starts when it commits.

    `reply=True` marks a message answering a request this org accepted (task results): the org's outbound
    policy is not asked again, since accepting the request already admitted the requester."""
    address = recipient if isinstance(recipient, Address) else _address_or_400(recipient, "recipient")
    if sender_agent and not is_slug(sender_agent):
        reason = f"'{sender_agent[:80]}' is not an agent slug (lowercase letters, digits, '-' and '_')"
        raise HermesAPIError(f"{reason}.", code="invalid", details={"sender_agent": [reason]})
    if sender_agent and not reply:
        # The receiver shows the message as from `sender_agent.org`: only an agent of ours may be named. (A reply
        # names the agent the request was addressed to — an executor's rejection of an unknown agent included.)
        sender_agent = check_local_agent(org, sender_agent, field="sender_agent")
    peer: Peer | None = None
    if address.peer is None and not Organization.objects.filter(slug=address.org).exists():
        # Delivered locally, it could only be dead-lettered ("no organization here"); a policy denial would blame
        # the wrong thing. (Peers' orgs are only known to the peer.)
        raise HermesAPIError(
            f"There is no organization '{address.org}' on this instance; a peer's org is addressed as "
            f"{address.org}@<peer>.",
            code="unknown_recipient",
            details={"recipient": [f"no organization '{address.org}' here"]},
        )
    if address.peer is not None:
        peer = Peer.objects.filter(name=address.peer).first()
        if peer is None:
            raise HermesAPIError(
                f"No peer named '{address.peer}' is configured on this instance.",
                code="unknown_peer",
                details={"recipient": [f"unknown peer '{address.peer}'"]},
            )
        if peer.status != PeerStatus.ACTIVE and not reply:
            # A new conversation is refused at once; a reply (a task's results, its cancel or follow-up) is part of
            # one already under way: it is written and waits with the link's outbox until the link is enabled.
            raise HermesAPIError(f"Peer '{peer.name}' is disabled.", code="peer_disabled")
        if not reply and settings.HERMES_FEDERATION_HMAC and not selectors.has_live_key(peer):
            # It could only go unsigned and be refused by the peer. A reply is written all the same, like one to a
            # disabled link: its delivery waits, retrying, until a key is added.
            reason = no_live_key_reason(peer)
            raise HermesAPIError(f"The {reason}.", code="no_link_key", details={"recipient": [reason]})
    decision = (
        policy.Decision(True, "reply to an accepted request") if reply else policy.decide(org.pk, sender_agent, address)
    )
    if not decision.allowed:
        # The denial is audited even when the send ran inside a transaction that this error rolls back (an
        # Idempotency-Key request, a task on a federated agent).
        raise refusal(
            HermesAPIError(
                f"Federation policy forbids sending to {address}: {decision.reason}",
                code="policy_denied",
                status_code=403,
            ),
            lambda: audit(
                AuditEvent.POLICY_DENIED,
                org=org,
                peer=peer,
                actor=actor,  # who tried: a refused send is worth knowing the sender of
                reason=f"outbound to {address}: {decision.reason}",
            ),
        )
    with transaction.atomic():
        message = Message.objects.create(
            organization=org,
            sender_agent=sender_agent,
            recipient=str(address),
            peer=peer,
            type=type,
            payload=payload,
            correlation_id=correlation_id,
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        now = timezone.now()
        outbox = Outbox.objects.create(
            organization=org, message=message, status=OutboxStatus.PENDING, next_attempt_at=now, queued_at=now
        )
        transaction.on_commit(lambda: _enqueue(outbox.pk))
    return message


# The sending agent of the request being made in this context (agent→agent policies), read by the receiver of
# tasks' `task_submitted_remotely`, which the tasks app calls without knowing about sender agents.
_sender_agent: ContextVar[str] = ContextVar("federation_sender_agent", default="")


def request_remote_task(
    *,
    org: Any,
    agent: str,
    message: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    sender_agent: str = "",
    actor: Any = None,
    access: Any = None,
    deadline_seconds: int | None = None,
) -> RemoteTask:
    """Ask another org's agent (`echo.globex` here, `echo.globex@berlin` on a peer) to run a task.

    The task is an ordinary task of `org` on the federated agent's Agent row (`agents.actions.federated_agent`),
    so it shows in
    the tasks list and detail and streams like any other; creating it writes the `task_request` message (see
    `remote_tasks.send_task_request`), whose id correlates every `task_result` that comes back.
    """
    from apps.agents import actions as agent_actions
    from apps.tasks import actions as task_actions

    address = _address_or_400(agent, "agent")
    if address.agent is None:
        raise HermesAPIError(
            "A task request needs an agent address (agent.org or agent.org@peer).",
            code="invalid_address",
            details={"agent": ["name the agent: agent.org[@peer]"]},
        )
    token = _sender_agent.set(sender_agent)
    try:
        with transaction.atomic():
            local_agent = agent_actions.federated_agent(org, str(address))
            task = task_actions.create_task(
                org=org,
                agent=local_agent,
                message=message,
                metadata=metadata,
                access=access,
                created_by=actor,
                deadline=timedelta(seconds=deadline_seconds) if deadline_seconds else None,
            )
            return RemoteTask.objects.for_org(org).get(task_id=str(task.pk))
    except task_actions.InvalidMessage as exc:
        raise HermesAPIError(str(exc), code="invalid_message", details={"message": [str(exc)]}) from exc
    except HermesAPIError as exc:
        # send_message names its address `recipient`; the caller of this request gave it as `agent`.
        if "recipient" in exc.details:
            exc.details["agent"] = exc.details.pop("recipient")
        raise
    except task_actions.TaskInputTooLarge as exc:
        raise HermesAPIError(
            str(exc), code="input_too_large", status_code=413, details={"size": exc.size, "limit": exc.limit}
        ) from exc
    finally:
        _sender_agent.reset(token)


def current_sender_agent() -> str:
    return _sender_agent.get()


# --- Delivery transitions ---------------------------------------------------------------------------------


@dataclass
class AttemptResult:
    outcome: str  # AttemptOutcome
    duration_ms: float
    http_status: int | None = None
    error: str = ""
    response_excerpt: str = ""
    retry_after: float | None = None
    receipt: dict[str, Any] | None = None
    receipt_body: str = ""
    receipt_timestamp: int | None = None
    receipt_signature: str = ""


def _outbox_rows() -> Any:
    return Outbox.objects.unscoped("delivery works on rows by id for every org")


def claim_delivery(outbox_id: int) -> Outbox | None:
    """Atomically move a due row to in_flight; None when another worker has it or it is not due. The
    conditional UPDATE is the lock: of two workers racing for the same row, exactly one sees rowcount 1."""
    now = timezone.now()
    lease = timedelta(seconds=settings.HERMES_FEDERATION_TIMEOUT + 30)
    # The link's state is read apart: a join in the UPDATE below makes Django write `WHERE id IN (SELECT …)`,
    # and the status test inside that subquery no longer serialises two workers (both claimed the row).
    link = _outbox_rows().filter(_deliverable(), pk=outbox_id).values("message__peer_id", "message__peer__slow_until")
    row = link.first()
    if row is None:
        return None
    slow_until = row["message__peer__slow_until"]
    if slow_until is not None and slow_until > now and _in_flight_to(row["message__peer_id"], now):
        # A peer that stopped answering gets one attempt at a time; this one waits its turn (the sweeper brings
        # it back), instead of holding another worker slot for a whole timeout.
        _outbox_rows().filter(pk=outbox_id, status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED]).update(
            next_attempt_at=now + timedelta(seconds=settings.HERMES_FEDERATION_TIMEOUT), updated_at=now
        )
        return None
    claimed = (
        _outbox_rows()
        .filter(
            pk=outbox_id,
            status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED],
            next_attempt_at__lte=now + CLAIM_SLACK,
        )
        .update(status=OutboxStatus.IN_FLIGHT, attempts=F("attempts") + 1, lease_until=now + lease, updated_at=now)
    )
    if claimed != 1:
        return None
    return _outbox_rows().select_related("message", "message__peer", "organization").get(pk=outbox_id)


def _in_flight_to(peer_id: int, now: datetime) -> bool:
    return _outbox_rows().filter(message__peer_id=peer_id, status=OutboxStatus.IN_FLIGHT, lease_until__gt=now).exists()


def _note_peer_speed(peer_id: int | None, result: AttemptResult, now: datetime) -> None:
    """A timeout marks the peer slow for a while (a few timeouts' worth); a delivery clears it."""
    if peer_id is None:
        return
    peers = Peer.objects.filter(pk=peer_id)
    if result.outcome == AttemptOutcome.DELIVERED:
        peers.filter(slow_until__isnull=False).update(slow_until=None)
    elif result.error.startswith("timeout"):
        peers.update(slow_until=now + timedelta(seconds=3 * settings.HERMES_FEDERATION_TIMEOUT))


def _request_abandoned(message: Message) -> bool:
    from apps.federation.remote_tasks import request_abandoned  # (it imports this module)

    return request_abandoned(message)


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^(attempt-1))]; a server's
    Retry-After is a floor (still capped, so a hostile peer cannot park our queue)."""
    cap = min(settings.HERMES_FEDERATION_RETRY_MAX_DELAY, settings.HERMES_FEDERATION_RETRY_BASE * 2 ** (attempt - 1))
    delay = random.uniform(0, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.HERMES_FEDERATION_RETRY_MAX_DELAY))
    return delay


def finish_attempt(outbox: Outbox, result: AttemptResult) -> str:
    """Record the attempt and move the row on: delivered, failed (retry scheduled) or dead. Returns the status."""
    now = timezone.now()
    org = outbox.organization
    message = outbox.message
    outcome = result.outcome
    _note_peer_speed(message.peer_id, result, now)
    update: dict[str, Any] = {"lease_until": None, "updated_at": now}
    describe = f"HTTP {result.http_status}" if result.http_status else ""
    describe = f"{describe}: {result.error}" if result.error and describe else (describe or result.error)
    with transaction.atomic():
        number = (DeliveryAttempt.objects.for_org(org).filter(outbox=outbox).aggregate(n=Max("number"))["n"] or 0) + 1
        if outcome == AttemptOutcome.DELIVERED:
            status = OutboxStatus.DELIVERED
            update.update(
                receipt=result.receipt,
                receipt_body=result.receipt_body,
                receipt_timestamp=result.receipt_timestamp,
                receipt_signature=result.receipt_signature,
                delivered_at=now,
            )
            update["last_error"] = ""
            event, reason, delay = AuditEvent.DELIVERED, f"attempt {number}: receipt persisted", None
        else:
            delay = backoff_delay(outbox.attempts, result.retry_after)
            too_old = now + timedelta(seconds=delay) > outbox.queued_at + timedelta(
                seconds=settings.HERMES_FEDERATION_MAX_AGE
            )
            if message.type == MessageType.TASK_REQUEST and _request_abandoned(message):
                # Its task was canceled while this attempt was in flight: the cancel has gone out already, so
                # a retry could only deliver the request after it.
                status, why = OutboxStatus.WITHDRAWN, f"its task ended here during attempt {number} ({describe})"
            elif outcome == AttemptOutcome.PERMANENT:
                status, why = OutboxStatus.DEAD, f"permanent failure ({describe})"
            elif outbox.attempts >= settings.HERMES_FEDERATION_MAX_ATTEMPTS:
                status, why = OutboxStatus.DEAD, f"{outbox.attempts} attempts exhausted; last: {describe}"
            elif too_old:
                status, why = OutboxStatus.DEAD, f"max age reached; last: {describe}"
            else:
                status, why = OutboxStatus.FAILED, ""
            if status == OutboxStatus.DEAD and outcome == AttemptOutcome.RETRY:
                # Retryable, but this was the last try: the attempt log says so instead of "retry".
                outcome = AttemptOutcome.GAVE_UP
            update["last_error"] = describe[:1000]
            if status == OutboxStatus.DEAD:
                update["dead_at"] = now
                event, reason, delay = AuditEvent.DEAD_LETTERED, why, None
            elif status == OutboxStatus.WITHDRAWN:
                update["next_attempt_at"] = None
                event, reason, delay = AuditEvent.WITHDRAWN, why, None
            else:
                update["next_attempt_at"] = now + timedelta(seconds=delay)
                event, reason = AuditEvent.RETRIED, f"attempt {number} failed ({describe}); retry in {delay:.2f} s"
        DeliveryAttempt.objects.create(
            organization=org,
            outbox=outbox,
            number=number,
            duration_ms=round(result.duration_ms, 2),
            http_status=result.http_status,
            error=result.error[:300],
            response_excerpt=result.response_excerpt[:500],
            outcome=outcome,
        )
        update["status"] = status
        # Only the claim holder moves the row on (a sweeper that expired our lease has handed it to someone else).
        moved = (
            _outbox_rows()
            .filter(pk=outbox.pk, status=OutboxStatus.IN_FLIGHT, attempts=outbox.attempts)
            .update(**update)
        )
        if not moved:
            if _outbox_rows().filter(pk=outbox.pk, status=OutboxStatus.DELIVERED).exists():
                # Results correlated to it came back during the attempt (`delivered_by_results`): it arrived.
                return OutboxStatus.DELIVERED
            logger.warning("federation: outbox %s lease was lost during attempt %s", outbox.pk, number)
            return OutboxStatus.IN_FLIGHT
        audit(event, org=org, peer=message.peer, message_id=message.id, reason=reason)
        if event == AuditEvent.DEAD_LETTERED and message.type == MessageType.TASK_REQUEST:
            from apps.federation.remote_tasks import request_dead_lettered  # (it imports this module)

            request_dead_lettered(message, reason)
        if event == AuditEvent.WITHDRAWN:
            from apps.federation.remote_tasks import request_withdrawn_in_flight  # (it imports this module)

            request_withdrawn_in_flight(message)
        if delay is not None:
            outbox_id = outbox.pk
            transaction.on_commit(lambda: _enqueue(outbox_id, countdown=delay))
    FEDERATION_DELIVERIES.labels(outcome=outcome).inc()
    if status == OutboxStatus.DELIVERED:
        FEDERATION_DELIVERY_LATENCY.observe((now - outbox.queued_at).total_seconds())
    elif status == OutboxStatus.FAILED:
        FEDERATION_RETRIES.inc()
    return status


# --- Sweeper ----------------------------------------------------------------------------------------------


def sweep(*, batch: int = 1000) -> dict[str, int]:
    """Beat job: expire lost leases and re-enqueue overdue rows. (The dead-letter and backlog gauges are set at
    scrape time by apps.ops.metrics from selectors.delivery_backlog().)"""
    now = timezone.now()
    expired = 0
    for row in _outbox_rows().filter(status=OutboxStatus.IN_FLIGHT, lease_until__lt=now).only("pk", "attempts")[:batch]:
        # The worker died (or hung past its timeout) mid-attempt; the receiver dedups, so trying again is safe.
        if (
            _outbox_rows()
            .filter(pk=row.pk, status=OutboxStatus.IN_FLIGHT, attempts=row.attempts)
            .update(status=OutboxStatus.FAILED, next_attempt_at=now, lease_until=None, last_error="lease expired")
        ):
            expired += 1
            _enqueue(row.pk)
    overdue = list(
        _outbox_rows()
        .filter(_deliverable(), status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED])
        .filter(next_attempt_at__lte=now - CLAIM_SLACK)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch]
    )
    for outbox_id in overdue:
        _enqueue(outbox_id)
    dead = _outbox_rows().filter(status=OutboxStatus.DEAD).count()
    return {"expired_leases": expired, "requeued": len(overdue), "dead_letters": dead}


# --- Dead-letter queue ------------------------------------------------------------------------------------


def requeue(rows: Iterable[Outbox], *, actor: Any = None, reason: str = "") -> list[Outbox]:
    """Give dead rows a fresh round of attempts (and a fresh max-age window). Rows that are not dead are skipped.

    The previous round's error is cleared with its attempt count: shown beside `pending, 0 attempts` it read as
    this round's. It stays in the attempt log and the `dead_lettered` audit event (as the task side's does)."""
    done: list[Outbox] = []
    now = timezone.now()
    with transaction.atomic():
        for row in rows:
            moved = (
                _outbox_rows()
                .filter(pk=row.pk, status=OutboxStatus.DEAD)
                .update(
                    status=OutboxStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    queued_at=now,
                    dead_at=None,
                    last_error="",
                    updated_at=now,
                )
            )
            if not moved:
                continue
            audit(
                AuditEvent.REQUEUED,
                org=row.organization,
                peer=row.message.peer,
                message_id=row.message_id,
                actor=actor,
                reason=reason or "requeued from the dead-letter queue",
            )
            if row.message.type == MessageType.TASK_REQUEST:
                from apps.federation.remote_tasks import request_requeued  # (it imports this module)

                request_requeued(row.message)
            outbox_id = row.pk
            transaction.on_commit(lambda outbox_id=outbox_id: _enqueue(outbox_id))  # type: ignore[misc]
            done.append(row)
    return done


def delivered_by_results(message_id: Any, *, org: Any) -> bool:
    """A task request whose results came back has arrived, whatever its own delivery says (its receipt was not
    accepted — unsigned, mis-signed, lost — and an attempt is retrying, or the row was withdrawn or dead-lettered
    meanwhile): mark it delivered, saying the receipt itself was not. False when there is nothing to change
    (delivered already, or discarded). An attempt still in flight then finds its claim gone and changes nothing."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            Outbox.objects.for_org(org)
            .select_for_update(of=("self",))
            .select_related("message", "message__peer")
            .exclude(status__in=[OutboxStatus.DELIVERED, OutboxStatus.DISCARDED])
            .filter(message_id=message_id)
            .first()
        )
        if row is None:
            return False
        was = row.get_status_display().lower()
        note = "delivered: results for it came back, but no receipt from the peer was accepted"
        if row.last_error:
            note += f" (last: {row.last_error})"
        Outbox.objects.for_org(org).filter(pk=row.pk).update(
            status=OutboxStatus.DELIVERED,
            delivered_at=now,
            next_attempt_at=None,
            lease_until=None,
            dead_at=None,
            last_error=note[:1000],
            updated_at=now,
        )
        audit(
            AuditEvent.DELIVERED,
            org=org,
            peer=row.message.peer,
            message_id=message_id,
            reason=f"results correlated to it were received (it was {was}); its receipt was not accepted",
        )
    return True


def withdraw(row: Outbox, *, reason: str) -> bool:
    """Take back a message that is still waiting for an attempt (pending, or failed with a retry scheduled), so
    that it never leaves. False when it is no longer waiting: an attempt holds it, or it was delivered or
    dead-lettered meanwhile. The conditional UPDATE is the lock, as in `claim_delivery`."""
    now = timezone.now()
    with transaction.atomic():
        moved = (
            _outbox_rows()
            .filter(pk=row.pk, status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED])
            .update(status=OutboxStatus.WITHDRAWN, next_attempt_at=None, updated_at=now)
        )
        if moved:
            peer = row.message.peer
            audit(AuditEvent.WITHDRAWN, org=row.organization, peer=peer, message_id=row.message_id, reason=reason)
    return bool(moved)


def discard(rows: Iterable[Outbox], *, actor: Any = None, reason: str = "") -> list[Outbox]:
    """Give up on dead rows for good; they stay in the log as discarded."""
    done: list[Outbox] = []
    now = timezone.now()
    with transaction.atomic():
        for row in rows:
            moved = (
                _outbox_rows()
                .filter(pk=row.pk, status=OutboxStatus.DEAD)
                .update(status=OutboxStatus.DISCARDED, updated_at=now)
            )
            if not moved:
                continue
            audit(
                AuditEvent.DISCARDED,
                org=row.organization,
                peer=row.message.peer,
                message_id=row.message_id,
                actor=actor,
                reason=reason or "discarded from the dead-letter queue",
            )
            if row.message.type == MessageType.TASK_REQUEST:
                from apps.federation.remote_tasks import request_discarded  # (it imports this module)

                request_discarded(row.message, reason or "discarded")
            done.append(row)
    return done
