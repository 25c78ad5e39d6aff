from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.agents.models import (
    DESCRIPTION_MAX_LENGTH,
    NAME_MAX_LENGTH,
    SLUG_MAX_LENGTH,
    VERSION_MAX_LENGTH,
    Agent,
    Visibility,
    validate_agent_slug,
    validate_agent_url,
)
from apps.core.serializers import PatchSerializer, StrictBooleanField, StrictFieldsMixin
from apps.core.validators import display_name


class AgentSerializer(serializers.ModelSerializer):
    organization: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    # Null for the built-in demo agents (nobody registered them) and once the creator's account is deleted.
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="email", read_only=True, allow_null=True
    )
    streaming = serializers.BooleanField(read_only=True)
    push_notifications = serializers.BooleanField(read_only=True)
    is_online = serializers.BooleanField(read_only=True)
    owned = serializers.SerializerMethodField(help_text="True when the agent belongs to the caller's organization.")

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "version",
            "url",
            "card_url",
            "federation_address",
            "protocol_version",
            "streaming",
            "push_notifications",
            "capabilities",
            "skills",
            "visibility",
            "is_demo",
            "is_online",
            "last_seen_at",
            "last_error",
            "organization",
            "owned",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_owned(self, agent: Agent) -> bool:
        org = self.context.get("org")
        return org is not None and agent.organization_id == org.pk


class AgentDetailSerializer(AgentSerializer):
    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "card"]
        read_only_fields = fields

    # Only ever the caller's own agent (a read of another org's is a ForeignAgent). Declared `true`, not `boolean`,
    # so the two answers of GET /agents/{id} exclude each other: OpenAPI 3.0 objects accept extra fields, so an
    # AgentDetail also matched ForeignAgent and a validator refused every owner's answer to its `oneOf`.
    @extend_schema_field({"type": "boolean", "enum": [True]})
    def get_owned(self, agent: Agent) -> bool:
        return super().get_owned(agent)


class MarketplaceAgentSerializer(serializers.ModelSerializer):
    organization: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    streaming = serializers.BooleanField(read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "name", "slug", "description", "version", "streaming", "skills", "organization", "created_at"]
        read_only_fields = fields


class ForeignAgentSerializer(MarketplaceAgentSerializer):
    """Another org's public agent read by id: its marketplace listing. The endpoint, card, errors and creator
    stay its owner's."""

    owned = serializers.SerializerMethodField(help_text="Always false: the agent belongs to another organization.")

    class Meta(MarketplaceAgentSerializer.Meta):
        fields = [*MarketplaceAgentSerializer.Meta.fields, "owned"]
        read_only_fields = fields

    def get_owned(self, agent: Agent) -> Literal[False]:  # `enum: [false]` in the schema (see AgentDetailSerializer)
        return False


class AgentCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    MODES = (("card", "Fetch and validate the agent's card"), ("manual", "No card: state the endpoint yourself"))

    mode = serializers.ChoiceField(choices=MODES, default="card")
    url = serializers.CharField(
        max_length=500,
        validators=[validate_agent_url],
        help_text="card mode: the agent's base URL (or its card's URL); manual mode: its JSON-RPC endpoint.",
    )
    slug = serializers.CharField(max_length=SLUG_MAX_LENGTH, required=False, validators=[validate_agent_slug])
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)
    name = serializers.CharField(
        max_length=NAME_MAX_LENGTH,
        required=False,
        validators=[display_name],
        help_text="manual mode only (required there).",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=DESCRIPTION_MAX_LENGTH)
    version = serializers.CharField(max_length=VERSION_MAX_LENGTH, required=False, allow_blank=True, default="")
    streaming = StrictBooleanField(required=False, default=False)
    protocol_version = serializers.ChoiceField(choices=[("1.0", "1.0"), ("0.3", "0.3")], default="1.0")
    skills = serializers.ListField(child=serializers.DictField(), required=False, default=list)

    MANUAL_ONLY = ("name", "description", "version", "streaming", "protocol_version", "skills")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["mode"] == "manual" and not attrs.get("name"):
            raise serializers.ValidationError({"name": ["Required when registering without a card."]})
        if attrs["mode"] == "card":
            stray = [field for field in self.MANUAL_ONLY if field in self.initial_data]
            if stray:
                raise serializers.ValidationError(
                    {field: ["Comes from the agent card; use mode 'manual' to set it."] for field in stray}
                )
        return attrs


class AgentUpdateSerializer(PatchSerializer):
    name = serializers.CharField(max_length=NAME_MAX_LENGTH, required=False, validators=[display_name])
    slug = serializers.CharField(max_length=SLUG_MAX_LENGTH, required=False, validators=[validate_agent_slug])
    description = serializers.CharField(required=False, allow_blank=True, max_length=DESCRIPTION_MAX_LENGTH)
    version = serializers.CharField(max_length=VERSION_MAX_LENGTH, required=False, allow_blank=True)
    url = serializers.CharField(
        max_length=500,
        required=False,
        validators=[validate_agent_url],
        help_text="Agents registered without a card only.",
    )
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    streaming = StrictBooleanField(required=False)


class DemoAssignmentSerializer(serializers.Serializer):
    created = AgentSerializer(many=True)
    existing = AgentSerializer(many=True, help_text="The demo agents the org had, refreshed (`restored` included).")
    restored = AgentSerializer(many=True, help_text="Of `existing`: deleted earlier (kept for their tasks), back now.")
