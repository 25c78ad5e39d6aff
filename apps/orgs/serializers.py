from __future__ import annotations

from rest_framework import serializers

from apps.core.permissions import SCOPES
from apps.orgs.actions import MAX_ROTATION_GRACE
from apps.orgs.models import APIKey


class APIKeySerializer(serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="email", read_only=True)
    state = serializers.SerializerMethodField()
    rotated_to: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)

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

    def get_state(self, key: APIKey) -> str:
        return key.state()


class IssuedAPIKeySerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(help_text="The plaintext key. Shown this once; Hermes keeps only a digest.")

    class Meta(APIKeySerializer.Meta):
        fields = ["key", *APIKeySerializer.Meta.fields]
        read_only_fields = fields

    def get_key(self, key: APIKey) -> str:
        return str(self.context["plaintext"])


class APIKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=list(SCOPES)), allow_empty=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    rate_limit_per_minute = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class APIKeyRotateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=int(MAX_ROTATION_GRACE.total_seconds()),
        default=86400,
        help_text="How long the old key keeps working after rotation (default one day).",
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=list(SCOPES)), required=False, allow_empty=False
    )
