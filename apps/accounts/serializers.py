from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.core.permissions import Access


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
