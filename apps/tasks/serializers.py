from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from apps.core.serializers import StrictFieldsMixin
from apps.tasks.models import Task, TaskEvent, TaskState

# The parts of one message (the input, or a follow-up), as the API takes it.
MAX_PARTS = 64


class StrictTextField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField turns 5 into "5", and the agent would be sent text the
    caller never wrote (A2A text is a string; `normalize_message` refuses anything else)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class PartSerializer(serializers.Serializer):
    """An A2A part: text or data. Accepts v1.0 (`{"text": …}`) and v0.3 (`{"kind": "text", "text": …}`) shapes."""

    kind = serializers.ChoiceField(choices=["text", "data"], required=False)
    text = StrictTextField(required=False, allow_blank=False, trim_whitespace=False)
    metadata = serializers.DictField(required=False)

    def get_fields(self) -> dict[str, Any]:
        # `data` is the A2A field name, but a class attribute of that name would shadow Serializer.data.
        return {**super().get_fields(), "data": serializers.JSONField(required=False)}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        present = [name for name in ("text", "data") if name in attrs]
        if len(present) != 1:
            raise serializers.ValidationError("A part has exactly one of 'text' or 'data'.")
        kind = present[0]
        if attrs.get("kind", kind) != kind:
            raise serializers.ValidationError(f"kind '{attrs['kind']}' does not match the '{kind}' field.")
        if kind == "data" and not isinstance(attrs["data"], dict):
            raise serializers.ValidationError({"data": "A data part holds a JSON object."})
        part: dict[str, Any] = {"kind": kind, kind: attrs[kind]}
        if attrs.get("metadata"):
            part["metadata"] = attrs["metadata"]
        return part


# Named for the schema: federation has a MessageSerializer too, and two "Message" components are ambiguous.
@extend_schema_serializer(component_name="TaskMessage")
class MessageSerializer(serializers.Serializer):
    # The list's own limits (DRF checks them before reading any part; the schema says minItems / maxItems).
    parts: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=PartSerializer(),
        allow_empty=False,
        max_length=MAX_PARTS,
        error_messages={
            "empty": "A message needs at least one part.",
            "max_length": "A message holds at most {max_length} parts.",
        },
    )
    metadata = serializers.DictField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        message: dict[str, Any] = {"role": "user", "parts": value["parts"]}
        if value.get("metadata"):
            message["metadata"] = value["metadata"]
        return message


class TaskCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    # Taken as sent, untrimmed: `GET /tasks?agent=` refuses " <id>" as no id, and so does this (404, saying so).
    agent = serializers.CharField(
        max_length=64,
        trim_whitespace=False,
        help_text="The agent's id: one of your org's (GET /api/v1/agents) or a public one (GET /api/v1/marketplace).",
    )
    input = MessageSerializer()
    metadata = serializers.DictField(required=False, default=dict)
    deadline_seconds = serializers.IntegerField(required=False, min_value=1, max_value=7 * 24 * 3600)


class FollowUpSerializer(StrictFieldsMixin, serializers.Serializer):
    input = MessageSerializer()


# Declared field by field rather than as a ModelSerializer: that one rebuilds its fields from the model on every
# instantiation, which was a tenth of the cost of `POST /tasks`.
class TaskSerializer(serializers.Serializer):
    """A task as the API shows it."""

    id = serializers.UUIDField(read_only=True)
    agent = serializers.SerializerMethodField()
    status = serializers.ChoiceField(source="state", choices=TaskState.choices, read_only=True)
    input = serializers.JSONField(read_only=True)
    metadata = serializers.JSONField(read_only=True)
    remote_task_id = serializers.CharField(read_only=True)
    remote_context_id = serializers.CharField(read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    last_seq = serializers.IntegerField(read_only=True)
    last_error = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    deadline_at = serializers.DateTimeField(read_only=True, allow_null=True)
    cancel_requested_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_agent(self, task: Task) -> dict[str, Any]:
        agent = task.agent
        return {"id": str(agent.pk), "name": getattr(agent, "name", "")}


class TaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = ["seq", "kind", "data", "created_at"]
        read_only_fields = fields


class TaskTimelineSerializer(serializers.Serializer):
    """A page of a task's timeline, as `GET /tasks/{id}/events` answers it (declared for the schema)."""

    task_id = serializers.UUIDField(read_only=True)
    status = serializers.ChoiceField(choices=TaskState.choices, read_only=True, help_text="The task's status now.")
    last_seq = serializers.IntegerField(read_only=True, help_text="The seq of the task's latest event.")
    results = TaskEventSerializer(many=True, read_only=True, help_text="Events with seq > `after`, in order.")
    next_after = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Pass as `after` for the next page; null when this page reaches `last_seq`.",
    )


STATUS_CHOICES = [s.value for s in TaskState]
