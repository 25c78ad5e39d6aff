"""What every request body serializer of the API shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers


class StrictFieldsMixin:
    """Refuses a key of the request body that the endpoint does not take.

    DRF drops unknown keys silently, so a typo (`deadline_second`) or a field that cannot be changed (`slug` in a
    PATCH of an org) made a request that "succeeded" without doing what was asked. Only the top level is strict:
    nested A2A messages and parts legitimately carry fields Hermes ignores (`role`,
    `messageId`, …).
    """

    fields: Any
    parent: Any

    def to_internal_value(self, data: Any) -> Any:
        if self.parent is None and isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                takes = ", ".join(sorted(name for name, field in self.fields.items() if not field.read_only))
                reason = f"Unknown field: this endpoint takes {takes}." if takes else "Unknown field."
                raise serializers.ValidationError({name: [reason] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictBooleanField(serializers.BooleanField):
    """JSON `true` or `false`, nothing else. DRF's BooleanField also takes "yes", "on", "1", 1 and their kin, so
    `{"streaming": "yes"}` turned streaming on; the API refuses a value of another type rather than turning it
    into one, as text refuses a number."""

    default_error_messages = {"invalid": "Must be true or false (a JSON boolean)."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class PatchSerializer(StrictFieldsMixin, serializers.Serializer):
    """A PATCH body: every field optional, unknown ones refused, and an empty body a 400 that names the fields
    (it was a 200 that changed nothing on some endpoints and a 400 on others)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            takes = ", ".join(f"`{name}`" for name, field in self.fields.items() if not field.read_only)
            raise serializers.ValidationError({"non_field_errors": [f"Nothing to change: give any of {takes}."]})
        return attrs


class AuditPersonSerializer(serializers.Serializer):
    """Who did something, in an audit trail (the org's and federation's): the person, not their session or key."""

    id = serializers.IntegerField(read_only=True)
    email = serializers.EmailField(read_only=True)
    name = serializers.CharField(read_only=True)
