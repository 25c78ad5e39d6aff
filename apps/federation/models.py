"""Federation: peers and their link keys, the address book, policies, outbound messages with their delivery
state and attempt log, the deduplicating inbox, and the federation audit log.

Peers and link keys belong to the instance (a link is between two Hermes installations, shared by every org on
it); everything else belongs to an org and is read through `.for_org(org)`.
"""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from apps.core import crypto
from apps.core.http import OutboundBlocked, check_url
from apps.core.tenancy import OrgOwnedModel, OrgScopedManager
from apps.core.validators import display_name, service_url_parts
from apps.federation.addresses import is_slug


class PeerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DISABLED = "disabled", "Disabled"  # no outbound delivery, inbound refused


def validate_base_url(value: str) -> None:
    """http(s)://host[:port][/path]. Unlike Django's URLValidator, a host without a dot is accepted: peers on
    one Docker or cluster network reach each other by service name (`http://hermes-berlin:8000`)."""
    problem = "Enter the peer's base URL: http:// or https://, a host, an optional port and path."
    parts = service_url_parts(value, problem)
    # No user:password@ either: requests are authenticated by signatures, and credentials in a URL end up in logs.
    if "@" in parts.netloc:
        raise ValidationError(
            "Leave credentials out of the peer's URL (user:password@): messages are authenticated by their "
            "signatures, and a password in a URL ends up in logs.",
            code="credentials",
        )
    if parts.query or parts.fragment:
        raise ValidationError(problem, code="invalid")
    # What the outbound guard refuses whatever HERMES_SSRF_ALLOWLIST says — a cloud metadata address, or a URL
    # httpx cannot even parse (`http://0251.0376.0251.0376/`: urlsplit takes it, httpx finds no IPv4 address in
    # it) — means a peer that could only ever dead-letter: refuse it here, in the guard's words. (A private or
    # loopback address depends on the allowlist, which may change: adding one only warns, see
    # actions.delivery_blocked_reason.)
    try:
        check_url(value)
    except OutboundBlocked as exc:
        if exc.rule == "metadata":
            raise ValidationError(str(exc), code="ssrf") from None
        if exc.rule == "invalid_url":
            raise ValidationError(f"{exc} {problem}", code="invalid") from None


def validate_peer_name(value: str) -> None:
    """Peer names are one part of an address, which is lower-cased when parsed: `Gamma` could be stored but never
    addressed (`demo@Gamma` looks up `gamma`)."""
    if not is_slug(value):
        hint = f" (e.g. '{value.lower()}')" if is_slug(value.lower()) else ""
        raise ValidationError(
            f"Use lower-case letters, digits, '-' and '_', starting and ending with a letter or digit{hint}: "
            "addresses are lower-case.",
            code="peer_name",
        )


class Peer(models.Model):
    """Another Hermes instance. `name` is what addresses here call it (`globex@<name>`); `local_name` is what it
    calls us: we send it in the receive path so the peer knows which link keys verify the request."""

    name = models.SlugField(max_length=60, unique=True, validators=[validate_peer_name])
    base_url = models.CharField(max_length=300, validators=[validate_base_url])
    # The peer's name for us: it looks it up as one of its peer names, so the same rule applies.
    local_name = models.SlugField(max_length=60, validators=[validate_peer_name])
    status = models.CharField(max_length=20, choices=PeerStatus.choices, default=PeerStatus.ACTIVE)
    # Set when an attempt to the peer ran out of time, cleared by a delivery: until then it gets one attempt in
    # flight at a time (apps.federation.actions.claim_delivery), so a peer that stopped answering cannot take
    # every worker slot — task runs and deliveries to other peers share them.
    slow_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Each end puts its own name for the other in the signed `link` binding; with one name at both ends a
        # message sent to the peer and one posted back to us carry the same binding, so it binds nothing.
        if self.name and self.name == self.local_name:
            raise ValidationError(
                {
                    "local_name": f"The peer's name for this instance must differ from our name for it "
                    f"('{self.name}' at both ends binds nothing): give the two ends different names."
                },
                code="same_name",
            )

    @property
    def inbox_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/api/v1/federation/receive/{self.local_name}"


class KeyState(models.TextChoices):
    NEXT = "next", "Next (K n+1, added, not yet primary)"
    CURRENT = "current", "Current (K n)"
    PREVIOUS = "previous", "Previous (still verifies until retired)"
    RETIRED = "retired", "Retired (never signs or verifies)"


LIVE_KEY_STATES = (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS)


class LinkKey(models.Model):
    """One HMAC secret of a link, shared out of band with the peer. Stored Fernet-encrypted; only the fingerprint
    (a SHA-256 prefix both sides can compare) is ever displayed after creation."""

    peer = models.ForeignKey(Peer, on_delete=models.CASCADE, related_name="keys")
    version = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=KeyState.choices)
    secret_encrypted = models.TextField()
    fingerprint = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("peer", "-version")
        constraints = [
            models.UniqueConstraint(fields=["peer", "version"], name="fed_linkkey_unique_version"),
            # At most one K_n and one K_n+1 per link: rotation is add-next, promote, retire.
            models.UniqueConstraint(
                fields=["peer"], condition=Q(state="current"), name="fed_linkkey_one_current_per_peer"
            ),
            models.UniqueConstraint(fields=["peer"], condition=Q(state="next"), name="fed_linkkey_one_next_per_peer"),
        ]

    def __str__(self) -> str:
        return f"{self.peer_id}/k{self.version} ({self.state})"

    @staticmethod
    def fingerprint_of(secret: bytes) -> str:
        return hashlib.sha256(secret).hexdigest()[:16]

    def set_secret(self, secret: bytes) -> None:
        self.secret_encrypted = crypto.encrypt(secret)
        self.fingerprint = self.fingerprint_of(secret)

    def secret(self) -> bytes:
        return crypto.decrypt(self.secret_encrypted)


class Contact(OrgOwnedModel):
    """An org's address book entry for a federation address."""

    name = models.CharField(max_length=120, validators=[display_name])
    address = models.CharField(max_length=200)
    notes = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "address"], name="fed_contact_unique_address"),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>"


class Effect(models.TextChoices):
    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"


class Policy(OrgOwnedModel):
    """Allow or deny traffic between one of our org's agents (or the whole org, `local_agent=""`) and a remote
    address pattern: `*`, `*@peer`, `org[@peer]` (the org and all its agents) or `agent.org[@peer]`. The most
    specific rule wins; deny wins a tie; with no rule the instance default applies
    (HERMES_FEDERATION_DEFAULT_POLICY). Rules apply both to what we send and to what we accept."""

    local_agent = models.SlugField(max_length=80, blank=True)
    remote = models.CharField(max_length=200)
    effect = models.CharField(max_length=10, choices=Effect.choices)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "local_agent", "remote"], name="fed_policy_unique_local_remote"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.effect} {self.local_agent or '*'} <-> {self.remote}"


class MessageType(models.TextChoices):
    MESSAGE = "message", "Message"
    TASK_REQUEST = "task_request", "Task request"
    TASK_RESULT = "task_result", "Task result"
    TASK_CANCEL = "task_cancel", "Task cancel"
    TASK_INPUT = "task_input", "Task follow-up input"
    RECEIPT = "receipt", "Receipt"


class Message(OrgOwnedModel):
    """An outbound message of `organization` (the sender). Its id is the Standard Webhooks `webhook-id` and the
    idempotency key of every delivery attempt: the receiver deduplicates on (link, id)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sender_agent = models.SlugField(max_length=80, blank=True)
    recipient = models.CharField(max_length=200)  # the address as typed, canonicalised
    peer = models.ForeignKey(Peer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=20, choices=MessageType.choices, default=MessageType.MESSAGE)
    payload = models.JSONField(default=dict)
    correlation_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.type} {self.id} -> {self.recipient}"


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_FLIGHT = "in_flight", "In flight"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (will retry)"
    DEAD = "dead", "Dead-lettered"
    DISCARDED = "discarded", "Discarded from the DLQ"
    # A task request its task gave up on (canceled, or past its deadline) before the request was delivered.
    WITHDRAWN = "withdrawn", "Withdrawn (its task ended first)"


class Outbox(OrgOwnedModel):
    """Delivery state of one outbound message. The row is the truth: Celery messages only say "look at row X"."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="outbox")
    status = models.CharField(max_length=20, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    # Attempts in the current round; a requeue from the DLQ starts a new round (and a new max-age window from
    # `queued_at`). DeliveryAttempt.number keeps counting across rounds.
    attempts = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    receipt = models.JSONField(null=True, blank=True)
    # The signed receipt exactly as received (body bytes, webhook-timestamp, webhook-signature): proof of delivery
    # that anyone holding the link key can re-verify later.
    receipt_body = models.TextField(blank=True)
    receipt_timestamp = models.BigIntegerField(null=True, blank=True)
    receipt_signature = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "outbox"
        indexes = [
            # The sweeper: "due rows that are waiting" (pending/failed by next_attempt_at).
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "failed"]),
                name="fed_outbox_due_idx",
            ),
            # The sweeper's lease check on in-flight rows.
            models.Index(fields=["lease_until"], condition=Q(status="in_flight"), name="fed_outbox_lease_idx"),
            # DLQ and status lists per org.
            models.Index(fields=["organization", "status", "updated_at"], name="fed_outbox_org_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} {self.status} ({self.attempts} attempts)"

    @property
    def held_back_reason(self) -> str:
        """Why a waiting row is not being attempted, when its link holds it back ("" otherwise): such a row has no
        attempts and no error of its own, and its past due time read as an ordinary overdue message. (Reads
        `message.peer`: select it with the row.)"""
        peer = self.message.peer
        if self.status in (OutboxStatus.PENDING, OutboxStatus.FAILED) and peer and peer.status != PeerStatus.ACTIVE:
            return f"waiting: link '{peer.name}' is disabled"
        return ""


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    RETRY = "retry", "Retryable failure"
    PERMANENT = "permanent", "Permanent failure"
    # A retryable failure on which the budget (max attempts or max age) ran out: the attempt that dead-lettered.
    GAVE_UP = "dead", "Gave up (retries exhausted)"


class DeliveryAttempt(OrgOwnedModel):
    outbox = models.ForeignKey(Outbox, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    duration_ms = models.FloatField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)

    class Meta:
        ordering = ("outbox", "number")

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome} {self.http_status or self.error}"


class InboxEntry(OrgOwnedModel):
    """A message received for `organization`. Unique per (sending link, message id): a redelivery or a replay
    finds this row and gets `receipt` back instead of being processed again. `peer` is null for messages from
    another org on this instance."""

    peer = models.ForeignKey(Peer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    message_id = models.UUIDField()
    sender = models.CharField(max_length=200)  # qualified from our side: `acme@peer-name` or `acme`
    recipient_agent = models.SlugField(max_length=80, blank=True)
    type = models.CharField(max_length=20, choices=MessageType.choices)
    payload = models.JSONField(default=dict)
    correlation_id = models.UUIDField(null=True, blank=True, db_index=True)
    receipt = models.JSONField()
    # Set when the type-specific handler ran (e.g. a task_request created its task); the sweeper re-drives the rest.
    handled_at = models.DateTimeField(null=True, blank=True)
    handling_error = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name_plural = "inbox entries"
        indexes = [
            # The sweeper: "entries whose handler never ran".
            models.Index(fields=["created_at"], condition=Q(handled_at__isnull=True), name="fed_inbox_unhandled_idx"),
        ]
        constraints = [
            # The dedup key; two partial constraints because NULL peers (local senders) never compare equal.
            models.UniqueConstraint(
                fields=["peer", "message_id"], condition=Q(peer__isnull=False), name="fed_inbox_unique_peer_msg"
            ),
            models.UniqueConstraint(
                fields=["message_id"], condition=Q(peer__isnull=True), name="fed_inbox_unique_local_msg"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.message_id} from {self.sender}"


class AuditEvent(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    DUPLICATE = "duplicate", "Duplicate (original receipt returned)"
    BAD_SIGNATURE = "bad_signature", "Bad signature"
    STALE_TIMESTAMP = "stale_timestamp", "Stale timestamp"
    POLICY_DENIED = "policy_denied", "Policy denied"
    REJECTED = "rejected", "Rejected (malformed or unknown recipient)"
    RATE_LIMITED = "rate_limited", "Rate limited (429)"
    DELIVERED = "delivered", "Delivered"
    RETRIED = "retried", "Retry scheduled"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"
    REQUEUED = "requeued", "Requeued from the DLQ"
    DISCARDED = "discarded", "Discarded from the DLQ"
    WITHDRAWN = "withdrawn", "Withdrawn (its task ended first)"
    KEY_ADDED = "key_added", "Key added"
    KEY_PROMOTED = "key_promoted", "Key promoted"
    KEY_RETIRED = "key_retired", "Key retired"


class FederationAuditEvent(models.Model):
    """Every inbound and outbound federation decision, with its reason. Org-less events (a request from an
    unknown link, key rotation) have no organization and are only visible to staff."""

    organization = models.ForeignKey(
        "orgs.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    event = models.CharField(max_length=30, choices=AuditEvent.choices)
    peer = models.ForeignKey(Peer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    reason = models.CharField(max_length=300, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = OrgScopedManager()

    class Meta:
        indexes = [
            # "What happened to this org's federation traffic lately", filterable by event.
            models.Index(fields=["organization", "event", "created_at"], name="fed_audit_org_event_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.message_id or ''} {self.reason}"


class RemoteTask(OrgOwnedModel):
    """The requesting org's mirror of a task it asked another org's agent to run. The remote side reports every
    task event back as a `task_result` message correlated to `request`; they land in `events` by the remote
    sequence number, so the timeline reads the same as a local task's whatever order messages arrive in."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="remote_task")
    agent_address = models.CharField(max_length=200)
    remote_task_id = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=20, default="requested")
    last_seq = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The requester's own Task that shows this timeline in the tasks views (not a foreign key, like
    # FederatedTask.task_id), and the highest remote seq applied to it: remote events are applied to it in order.
    task_id = models.CharField(max_length=64, blank=True)
    applied_seq = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.agent_address}: {self.state}"

    @property
    def waiting_for(self) -> str:
        """Why the mirror is behind what arrived ("" when it is not): events are applied in the executor's order,
        so a missing one (still on its way, or dead-lettered) holds back every later one."""
        if self.last_seq <= self.applied_seq:
            return ""
        return (
            f"waiting for event {self.applied_seq + 1}: events up to {self.last_seq} arrived, and the later ones "
            "are applied once the missing ones do"
        )


class RemoteTaskEvent(OrgOwnedModel):
    remote_task = models.ForeignKey(RemoteTask, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=30)
    data = models.JSONField(default=dict)
    state = models.CharField(max_length=20, blank=True)  # the remote task's state after this event

    class Meta:
        ordering = ("remote_task", "seq")
        constraints = [
            # A redelivered or replayed task_result never doubles an event.
            models.UniqueConstraint(fields=["remote_task", "seq"], name="fed_remote_event_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"


class FederatedTask(OrgOwnedModel):
    """On the executing side: a local task run for a requester on another org (here or on a peer), and where its
    events are reported. `task_id` is not a foreign key so federation does not depend on the tasks app's schema."""

    task_id = models.CharField(max_length=64, unique=True)
    inbox_entry = models.OneToOneField(InboxEntry, on_delete=models.CASCADE, related_name="federated_task")
    agent_slug = models.SlugField(max_length=80)
    reply_to = models.CharField(max_length=200)  # the requester, qualified from our side (`acme@paris`)
    correlation_id = models.UUIDField()  # the task_request message id

    def __str__(self) -> str:
        return f"task {self.task_id} for {self.reply_to}"
