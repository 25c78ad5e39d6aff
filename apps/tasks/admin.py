from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.core.admin import OrgOwnedAdmin, OrgOwnedInline
from apps.tasks.models import Task, TaskEvent


class TaskEventInline(OrgOwnedInline):
    """The timeline, read-only: events are history, written only by apps.tasks.actions."""

    model = TaskEvent
    fields = ("seq", "kind", "data", "created_at")
    readonly_fields = fields
    ordering = ("seq",)


@admin.register(Task)
class TaskAdmin(OrgOwnedAdmin):
    list_display = ("id", "organization", "agent", "state", "attempts", "created_at", "finished_at")
    list_filter = ("state",)
    list_select_related = ("organization", "agent")  # type: ignore[assignment]
    search_fields = ("id", "remote_task_id", "organization__slug", "agent__name")
    date_hierarchy = "created_at"
    inlines = [TaskEventInline]
    # State is changed through the API/actions (which record events); staff only read here.
    readonly_fields = [f.name for f in Task._meta.get_fields() if getattr(f, "concrete", False)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(TaskEvent)
class TaskEventAdmin(OrgOwnedAdmin):
    list_display = ("task", "seq", "kind", "organization", "created_at")
    list_filter = ("kind",)
    search_fields = ("task__id",)
    readonly_fields = ("organization", "task", "seq", "kind", "data", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
