"""Admin base for org-owned models: staff see every tenant, so the queryset is explicitly unscoped."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from apps.core.errors import HermesAPIError
from apps.core.models import AuditEvent, IdempotencyRecord


class OrgOwnedAdmin(admin.ModelAdmin):
    list_select_related = ("organization",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.model.objects.unscoped("staff admin sees every org")


class AdminRefusal(Exception):
    """Raised by a ModelAdmin's save_model/delete_model when the app's action refused the change; its message
    says why, in the action's words. Raise it `from` the action's error (see ActionAdmin)."""


class ActionAdmin(admin.ModelAdmin):
    """Base for admins whose saves and deletes go through an app's actions, which may refuse them.

    A refusal must save nothing and say only that: caught in save_model, Django went on to log the change and show
    "was changed successfully" under the "Not saved" error. Raised as AdminRefusal instead, it leaves the view's
    transaction, which rolls back everything the request wrote (the admin's own history entry too); the view then
    shows the refusal on the page the request came from."""

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except AdminRefusal as refusal:
            return self._refused(request, refusal, "Not saved", request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except AdminRefusal as refusal:
            change = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[object_id],
                current_app=self.admin_site.name,
            )
            return self._refused(request, refusal, "Not deleted", change)

    def _refused(self, request: HttpRequest, refusal: AdminRefusal, what: str, back: str) -> HttpResponse:
        if isinstance(refusal.__cause__, HermesAPIError):
            refusal.__cause__.run_after_rollback()  # the audit row of a refusal outlives the rollback
        self.message_user(request, f"{what}: {refusal}", messages.ERROR)
        return HttpResponseRedirect(back)


class OrgOwnedInline(admin.TabularInline):
    """Org-owned rows shown read-only under their parent (a task's events, a delivery's attempts): history that
    only the app's actions write. The inline formset narrows the queryset to the parent by its foreign key, which
    the tenancy guard does not count as scoping, so it starts explicitly unscoped like OrgOwnedAdmin's."""

    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.model.objects.unscoped("staff admin: the rows of the parent being shown")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdminMixin:
    """Rows that are evidence (audit logs, delivery records with their signed receipts): staff read them; nobody
    adds, edits or deletes them in the admin, not even in bulk. What may change them is an audited action."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """An audit log in the admin: read-only, or it would stop being evidence."""


@admin.register(AuditEvent)
class AuditEventAdmin(AuditLogAdmin):
    list_display = ("created_at", "org_id", "actor", "action", "target_type", "target_id")
    list_filter = ("action",)
    search_fields = ("action", "target_id")
    readonly_fields = [f.name for f in AuditEvent._meta.fields]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    """Read-only: a remembered response is what a client's retry will get back; editing it would lie to them."""

    list_display = ("created_at", "org_id", "endpoint", "key", "status_code")
    list_filter = ("status_code",)
    search_fields = ("key", "endpoint")
    readonly_fields = [f.name for f in IdempotencyRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
