from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.models import AuditEvent
from apps.core.permissions import SCOPES, Role
from apps.core.serializers import AuditPersonSerializer, PatchSerializer, StrictFieldsMixin
from apps.core.validators import display_name, visible_email
from apps.orgs.actions import MAX_ROTATION_GRACE, org_slug
from apps.orgs.models import (
    MAX_KEY_REQUESTS_PER_MINUTE,
    APIKey,
    APIKeyState,
    Invitation,
    Membership,
    Organization,
    Plan,
)


class APIKeySerializer(serializers.ModelSerializer):
    # Null once the creator's account is deleted.
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="email", read_only=True, allow_null=True
    )
    state = serializers.ChoiceField(
        choices=APIKeyState.choices,
        read_only=True,
        help_text="`active`; `expired` (its expiry, or its rotation's grace period, is over); `revoked`; "
        "`creator_gone`: its creator left the org (invited back later, they do not revive it) or was deactivated, "
        "so it answers 401 `key_creator_gone` until it is rotated (re-issued under the rotating person) or revoked.",
    )
    rotated_to: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The successor's id once the key was rotated; null until then."
    )

    class Meta:
        model = APIKey
        fields = [
            "id",
            "name",
            "display",
            "prefix",
            "last_four",
            "scopes",
            "state",
            "parent",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
            "rate_limit_per_minute",
            "rotated_to",
        ]
        read_only_fields = fields
        # Declared here rather than as a field: a serializer field named `parent` shadows Field.parent for mypy.
        extra_kwargs = {
            "parent": {
                "help_text": "The key this one was created with (null: with a session); revoking that key revokes "
                "this one."
            }
        }


class IssuedAPIKeySerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(help_text="The plaintext key. Shown this once; Hermes keeps only a digest.")

    class Meta(APIKeySerializer.Meta):
        fields = ["key", *APIKeySerializer.Meta.fields]
        read_only_fields = fields

    def get_key(self, key: APIKey) -> str:
        return str(self.context["plaintext"])


class APIKeyCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[display_name])
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=list(SCOPES)), allow_empty=False)
    # No defaults: a field left out is not the same as null (no expiry, no limit of its own). Created with an API
    # key, a key inherits what is left out from that key (actions.create_api_key).
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the key stops working; null: never. Left out: never, or with an API key that key's expiry.",
    )
    rate_limit_per_minute = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_KEY_REQUESTS_PER_MINUTE,
        help_text="The key's own limit of requests per minute (below the plan's); null: none. Left out: none, or "
        "with an API key that key's limit.",
    )


class APIKeyRotateSerializer(StrictFieldsMixin, serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=int(MAX_ROTATION_GRACE.total_seconds()),
        default=86400,
        help_text="How long the old key keeps working after rotation (default one day).",
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=list(SCOPES)),
        required=False,
        allow_empty=False,
        help_text="The successor's scopes; left out: the rotated key's. Within the rotating caller's, as when "
        "creating a key.",
    )


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The caller's role in this org.")
    limits = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "slug", "name", "plan", "role", "limits", "created_at"]
        read_only_fields = fields

    def get_role(self, org: Organization) -> str | None:
        roles = self.context.get("roles", {})
        return roles.get(org.pk)

    def get_limits(self, org: Organization) -> dict[str, int]:
        return {"requests_per_minute": org.limits.requests_per_minute, "tasks_per_day": org.limits.tasks_per_day}


class OrganizationCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=120, validators=[display_name])
    slug = serializers.CharField(max_length=60)

    def validate_slug(self, value: str) -> str:
        try:
            return org_slug(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict["slug"]) from error


class OrganizationUpdateSerializer(PatchSerializer):
    name = serializers.CharField(max_length=120, required=False, validators=[display_name])
    plan = serializers.ChoiceField(choices=Plan.choices, required=False)


class MemberUserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    name = serializers.CharField()


class MembershipSerializer(serializers.ModelSerializer):
    user = MemberUserSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = ["id", "user", "created_at"]


class RoleChangeSerializer(StrictFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    # Null once the inviter's account is deleted.
    invited_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="email", read_only=True, allow_null=True
    )
    state = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "state", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at"]
        read_only_fields = fields

    def get_state(self, invitation: Invitation) -> str:
        return invitation.state()


class InvitationCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254, validators=[visible_email])
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class InvitationAcceptSerializer(StrictFieldsMixin, serializers.Serializer):
    token = serializers.CharField(max_length=128)


# --- The audit log ----------------------------------------------------------------------------------------------


class AuditKeySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    display = serializers.CharField(read_only=True, help_text="As the keys list shows it: `hrm_ab12…wxyz`.")


# The view passes `api_keys` ({id: APIKey}, read in one query for the page) in the context: a row keeps only the
# key's id.
class OrgAuditEventSerializer(serializers.Serializer):
    """One change made in the organization: when, by whom (and with which API key), what and to what."""

    id = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    action = serializers.CharField(read_only=True, help_text="What happened: `task.created`, `api_key.revoked`, …")
    actor = AuditPersonSerializer(
        read_only=True,
        allow_null=True,
        help_text="The person who acted (through an API key: the key's creator); null for the system, or once the "
        "person's account is deleted.",
    )
    api_key = serializers.SerializerMethodField(help_text="The API key the change was made with; null otherwise.")
    target_type = serializers.CharField(read_only=True, help_text="The kind of object changed (`task`, `apikey`, …).")
    target_id = serializers.CharField(read_only=True)
    details = serializers.JSONField(read_only=True, help_text="What the action recorded; its keys depend on it.")

    @extend_schema_field(AuditKeySerializer(allow_null=True))
    def get_api_key(self, event: AuditEvent) -> dict[str, Any] | None:
        key = self.context.get("api_keys", {}).get(event.api_key_id) if event.api_key_id is not None else None
        return AuditKeySerializer(key).data if key is not None else None
