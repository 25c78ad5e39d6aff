from __future__ import annotations

from django.contrib import admin

from apps.core.admin import OrgOwnedAdmin, OrgOwnedInline, ReadOnlyAdminMixin
from apps.tasks.models import Task, TaskEvent


class TaskEventInline(OrgOwnedInline):
    """The timeline, read-only: events are history, written only by apps.tasks.actions."""

    model = TaskEvent
    fields = ("seq", "kind", "data", "created_at")
    readonly_fields = fields
    ordering = ("seq",)


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    """Read-only, deletes included: a task changes only through apps.tasks.actions (which record its events). A
    task deleted here left no audit row, and one with an outgoing federation request left its outbox row failing
    on every retry."""

    list_display = ("id", "organization", "agent", "state", "attempts", "created_at", "finished_at")
    list_filter = ("state",)
    list_select_related = ("organization", "agent")  # type: ignore[assignment]
    search_fields = ("id", "remote_task_id", "organization__slug", "agent__name")
    date_hierarchy = "created_at"
    inlines = [TaskEventInline]
    readonly_fields = [f.name for f in Task._meta.get_fields() if getattr(f, "concrete", False)]


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    """A timeline is history: an event deleted here was a hole in the task's timeline (and its stream's seq)."""

    list_display = ("task", "seq", "kind", "organization", "created_at")
    list_filter = ("kind",)
    search_fields = ("task__id",)
    readonly_fields = ("organization", "task", "seq", "kind", "data", "created_at")
