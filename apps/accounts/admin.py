"""Staff view of people. Email is the login (no username), so Django's UserAdmin gets email-based forms."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from apps.accounts import actions
from apps.accounts.models import User
from apps.core.admin import ActionAdmin, AdminRefusal, OrgOwnedInline
from apps.core.errors import HermesAPIError
from apps.orgs.models import Membership


class UserCreationAdminForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserChangeAdminForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class MembershipInline(OrgOwnedInline):
    """Which orgs the person belongs to, and as what (roles change in the console, under the role matrix)."""

    model = Membership
    fk_name = "user"
    fields = ("organization", "role", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).select_related("organization")


@admin.register(User)
class UserAdmin(ActionAdmin, DjangoUserAdmin):
    """Deleting or deactivating a person goes through apps.accounts.actions: their memberships end through
    remove_member (each org's audit log says who went; the invitations they sent stop working), and neither may
    leave an org without an active owner. Django's own delete cascaded the memberships away, unaudited, and could
    leave an org with no owner. A refusal saves and deletes nothing and says why (ActionAdmin)."""

    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    list_display = ("email", "name", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("date_joined", "last_login")
    inlines = [MembershipInline]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "usable_password", "password1", "password2")}),)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        if change and "is_active" in form.changed_data:
            # Refused while they are an org's last active owner: nobody could sign in to manage the org.
            try:
                actions.staff_set_user_active(user=obj, active=obj.is_active, actor=request.user)
            except HermesAPIError as exc:
                raise AdminRefusal(str(exc.detail)) from exc
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        try:
            actions.staff_delete_user(user=obj, actor=request.user)
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # All or nothing (changelist_view's transaction): a refusal names the person and deletes no one, where
        # going on would leave the selection half deleted, with Django's "Successfully deleted" for all of it.
        for user in queryset.order_by("pk"):
            try:
                actions.staff_delete_user(user=user, actor=request.user)
            except HermesAPIError as exc:
                why = str(exc.detail)
                who = "" if user.email in why else f"{user.email}: "  # remove_member's refusals name nobody
                raise AdminRefusal(f"{who}{why} No one was deleted.") from exc

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # "Delete selected users" runs here, outside the transaction Django gives the change and delete pages: in
        # one of our own, a refused deletion rolls back the ones before it and Django's history entries for them.
        try:
            with transaction.atomic():
                return super().changelist_view(request, extra_context)
        except AdminRefusal as refusal:
            return self._refused(request, refusal, "Not deleted", request.get_full_path())  # the list, as filtered
