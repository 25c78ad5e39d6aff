from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from apps.core import jsonutil
from apps.core.errors import HermesAPIError
from apps.core.serializers import AuditPersonSerializer, StrictFieldsMixin
from apps.core.validators import display_name
from apps.federation.actions import (
    USER_MESSAGE_TYPES,
    check_user_message_type,
    delivery_blocked_reason,
    unknown_peer_warning,
)
from apps.federation.models import (
    Contact,
    DeliveryAttempt,
    Effect,
    FederationAuditEvent,
    InboxEntry,
    LinkKey,
    Message,
    MessageType,
    Outbox,
    Peer,
    PeerStatus,
    Policy,
    RemoteTask,
    RemoteTaskEvent,
)


class LinkKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = LinkKey
        fields: tuple[str, ...] = ("version", "state", "fingerprint", "created_at", "promoted_at", "retired_at")


class AddedLinkKeySerializer(LinkKeySerializer):
    """What adding a key answers (declared for the schema): the key, and its secret when Hermes generated it."""

    secret = serializers.CharField(
        required=False,
        read_only=True,
        help_text="The generated whsec_ secret, in this response only: give it to the peer's operator. Absent "
        "when the request brought the secret.",
    )

    class Meta(LinkKeySerializer.Meta):
        fields = (*LinkKeySerializer.Meta.fields, "secret")


class PeerSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    keys = serializers.SerializerMethodField()
    delivery_warning = serializers.SerializerMethodField(
        help_text="Why the SSRF guard, as configured now, would refuse deliveries to `base_url` (a private address "
        "outside HERMES_SSRF_ALLOWLIST); null when nothing can be told without DNS. A peer is added all the same: "
        "the allowlist may be about to change."
    )

    class Meta:
        model = Peer
        fields = ("name", "base_url", "local_name", "status", "created_at", "keys", "delivery_warning")
        read_only_fields = ("status", "created_at", "keys")

    def get_keys(self, peer: Peer) -> list[dict[str, Any]]:
        return LinkKeySerializer(peer.keys.all(), many=True).data  # type: ignore[return-value]

    def get_delivery_warning(self, peer: Peer) -> str | None:
        return delivery_blocked_reason(peer)


class AddKeySerializer(StrictFieldsMixin, serializers.Serializer):
    secret = serializers.CharField(required=False, help_text="The whsec_ secret the other side generated.")


class PeerStatusSerializer(StrictFieldsMixin, serializers.Serializer):
    status = serializers.ChoiceField(
        choices=PeerStatus.choices, help_text="`disabled`: nothing is sent to the link or accepted from it."
    )


class RetireKeySerializer(StrictFieldsMixin, serializers.Serializer):
    version = serializers.IntegerField(required=False, min_value=1)


class ContactSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ("id", "name", "address", "notes", "created_at")
        read_only_fields = ("id", "created_at")
        # Notes as the console form: a note, not a document.
        extra_kwargs = {"name": {"validators": [display_name]}, "notes": {"max_length": 1000}}


class PolicySerializer(StrictFieldsMixin, serializers.ModelSerializer):
    effect = serializers.ChoiceField(choices=Effect.choices)
    remote_warning = serializers.SerializerMethodField(
        help_text="Why the rule may match nothing: `remote` names a peer this instance has no link to (e.g. "
        "`*@nosuchpeer`); null otherwise. The rule is saved all the same: the peer may be added next."
    )

    class Meta:
        model = Policy
        fields = ("id", "local_agent", "remote", "effect", "reason", "created_at", "remote_warning")
        read_only_fields = ("id", "created_at")
        extra_kwargs = {
            "local_agent": {
                "help_text": "The slug of one of the org's own agents (stored lower-case), or empty for the whole org."
            }
        }

    def get_remote_warning(self, rule: Policy) -> str | None:
        # The peer names are read once per response (a list of rules would otherwise ask once per rule); the
        # context is the root serializer's dict, shared by every rule of a list.
        context = cast(dict[str, Any], self.context)
        if "peer_names" not in context:
            context["peer_names"] = set(Peer.objects.values_list("name", flat=True))
        return unknown_peer_warning(rule.remote, context["peer_names"])


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ("number", "created_at", "duration_ms", "http_status", "error", "response_excerpt", "outcome")


class OutboxSerializer(serializers.ModelSerializer):
    held_back_reason = serializers.CharField(
        read_only=True,
        help_text='Why a waiting message is not attempted (e.g. "waiting: link \'berlin\' is disabled"), else "".',
    )

    class Meta:
        model = Outbox
        fields = (
            "status",
            "held_back_reason",
            "attempts",
            "queued_at",
            "next_attempt_at",
            "last_error",
            "receipt",
            "delivered_at",
            "dead_at",
        )


@extend_schema_serializer(component_name="FederationMessage")  # tasks has its own (A2A) "Message"
class MessageSerializer(serializers.ModelSerializer):
    delivery = OutboxSerializer(source="outbox", read_only=True)

    class Meta:
        model = Message
        fields = (
            "id",
            "type",
            "sender_agent",
            "recipient",
            "payload",
            "correlation_id",
            "created_at",
            "delivery",
        )
        read_only_fields = ("id", "created_at", "delivery")


class UserMessageTypeField(serializers.ChoiceField):
    """Only the types users may send; a protocol type is refused with the reason and where to go instead."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[(t.value, t.label) for t in USER_MESSAGE_TYPES], **kwargs)

    def to_internal_value(self, data: Any) -> str:
        try:
            return check_user_message_type(str(data))
        except HermesAPIError as exc:
            raise serializers.ValidationError(str(exc.detail)) from None


class SendMessageSerializer(StrictFieldsMixin, serializers.Serializer):
    recipient = serializers.CharField(max_length=200)
    type = UserMessageTypeField(default=MessageType.MESSAGE)
    payload = serializers.JSONField()
    sender_agent = serializers.SlugField(max_length=60, required=False, default="")
    correlation_id = serializers.UUIDField(required=False, allow_null=True, default=None)

    def validate_payload(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("payload must be a JSON object")
        limit = settings.HERMES_MAX_TASK_INPUT_BYTES
        if (size := jsonutil.encoded_size(value)) > limit:
            raise serializers.ValidationError(f"payload is {size} bytes, larger than the {limit}-byte limit")
        return value


class DeadLetterSerializer(serializers.ModelSerializer):
    """A DLQ entry inspected: the message with its payload, the delivery state and every attempt."""

    message = MessageSerializer(read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Outbox
        fields = ("message_id", *OutboxSerializer.Meta.fields, "message", "attempt_log")


class ReasonSerializer(StrictFieldsMixin, serializers.Serializer):
    """The optional body of a dead-letter action: why, for the audit log (and a discarded request's task)."""

    reason = serializers.CharField(required=False, default="", max_length=200)


class BulkIdsSerializer(ReasonSerializer):
    ids = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=500)


class RequeuedSerializer(serializers.Serializer):
    requeued = serializers.ListField(child=serializers.UUIDField(), help_text="The ids put back in the outbox.")


class DiscardedSerializer(serializers.Serializer):
    discarded = serializers.ListField(child=serializers.UUIDField(), help_text="The ids dropped for good.")


class InboxEntrySerializer(serializers.ModelSerializer):
    # Null for a message from another org on this instance (no link between them).
    peer: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )

    class Meta:
        model = InboxEntry
        fields = (
            "id",
            "message_id",
            "peer",
            "sender",
            "recipient_agent",
            "type",
            "payload",
            "correlation_id",
            "receipt",
            "created_at",
            "handled_at",
            "handling_error",
        )


class AuditEventSerializer(serializers.ModelSerializer):
    # Null for events that concern no link (a policy denial between orgs of this instance, a DLQ action, ...).
    peer: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )

    actor = AuditPersonSerializer(
        read_only=True,
        allow_null=True,
        help_text="Who acted, for an event a person caused (a DLQ requeue or discard, a key rotation); null for what "
        "the system decided or a peer sent.",
    )

    class Meta:
        model = FederationAuditEvent
        fields = ("id", "event", "peer", "actor", "message_id", "reason", "detail", "created_at")


class RemoteTaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RemoteTaskEvent
        fields = ("seq", "kind", "data", "state", "created_at")


class RemoteTaskSerializer(serializers.ModelSerializer):
    """A task another org's agent runs for us, with its timeline as reported by the executor."""

    request_id = serializers.UUIDField(read_only=True)
    task_id = serializers.CharField(
        read_only=True, help_text="This org's own task for it: GET /api/v1/tasks/{task_id}, its events and stream."
    )
    delivery = OutboxSerializer(source="request.outbox", read_only=True)
    events = RemoteTaskEventSerializer(many=True, read_only=True)
    last_seq = serializers.IntegerField(read_only=True, help_text="The highest remote sequence number received.")
    applied_seq = serializers.IntegerField(
        read_only=True, help_text="How far the timeline is applied to the task; `state` is the state there."
    )
    waiting_for = serializers.CharField(
        read_only=True,
        help_text='Events missing before the rest can be applied (e.g. "waiting for event 4: …"), else "".',
    )

    class Meta:
        model = RemoteTask
        fields = (
            "id",
            "task_id",
            "agent_address",
            "state",
            "remote_task_id",
            "error",
            "last_seq",
            "applied_seq",
            "waiting_for",
            "request_id",
            "created_at",
            "updated_at",
            "delivery",
            "events",
        )


class RequestRemoteTaskSerializer(StrictFieldsMixin, serializers.Serializer):
    agent = serializers.CharField(max_length=200, help_text="agent.org or agent.org@peer")
    message = serializers.JSONField(help_text='An A2A message: {"role": "user", "parts": [{"kind": "text", ...}]}')
    metadata = serializers.JSONField(required=False, default=dict)
    sender_agent = serializers.SlugField(max_length=80, required=False, default="")
    deadline_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=7 * 24 * 3600,
        help_text="How long this org waits for the result (default HERMES_TASK_DEADLINE_SECONDS); past it, the "
        "task fails here and the executor is asked to cancel.",
    )

    def validate_message(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("parts"), list) or not value["parts"]:
            raise serializers.ValidationError("message must be an A2A message object with a non-empty 'parts' list")
        # Its size is the task's input size, checked where every task's is (a 413, as POST /tasks answers).
        return value

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object")
        return value
