from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.core.permissions import Access
from apps.core.serializers import StrictFieldsMixin
from apps.core.validators import display_name, visible_email


class MembershipSummarySerializer(serializers.Serializer):
    org = serializers.CharField(source="organization.slug")
    org_name = serializers.CharField(source="organization.name")
    role = serializers.CharField()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    name = serializers.CharField()
    date_joined = serializers.DateTimeField()
    memberships = MembershipSummarySerializer(many=True)
    current = serializers.SerializerMethodField()

    def get_current(self, user: Any) -> dict[str, Any] | None:
        access = self.context.get("access")
        if not isinstance(access, Access):
            return None
        key = access.api_key
        return {
            "org": access.org.slug,
            "role": access.role,
            "via": "api_key" if key is not None else "session",
            "api_key": None if key is None else {"id": key.pk, "display": key.display, "name": key.name},
            "scopes": sorted(access.scopes) if access.scopes is not None else None,
        }


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    email = serializers.EmailField(read_only=True)
    name = serializers.CharField(read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)


class RegisterSerializer(StrictFieldsMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254, validators=[visible_email])
    password = serializers.CharField(write_only=True, max_length=128, style={"input_type": "password"})
    name = serializers.CharField(
        max_length=150, required=False, default="", allow_blank=True, validators=[display_name]
    )


class PasswordChangeSerializer(StrictFieldsMixin, serializers.Serializer):
    current_password = serializers.CharField(max_length=128)
    new_password = serializers.CharField(max_length=128)


class PasswordResetSerializer(StrictFieldsMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class PasswordResetConfirmSerializer(StrictFieldsMixin, serializers.Serializer):
    uid = serializers.CharField(max_length=64)
    token = serializers.CharField(max_length=128)
    new_password = serializers.CharField(max_length=128)
