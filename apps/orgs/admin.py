from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import ActionAdmin, AdminRefusal, OrgOwnedAdmin, ReadOnlyAdminMixin, staff_access
from apps.core.errors import HermesAPIError
from apps.orgs import actions
from apps.orgs.models import APIKey, Invitation, Membership, Organization


class OrganizationAdminForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = ("name", "slug", "plan", "created_by")
        help_texts = {
            "slug": "Fixed once the organization is added: federation addresses (acme, echo.acme@paris) and other "
            "organizations' policies name it by its slug.",
        }


@admin.register(Organization)
class OrganizationAdmin(ActionAdmin):
    form = OrganizationAdminForm
    list_display = ("slug", "name", "plan", "created_at")
    list_filter = ("plan",)
    search_fields = ("slug", "name")

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Name and plan through update_organization, as the console and the API change them: the org's audit log
        # shows staff's changes too (a plan changed here left no trace there).
        try:
            actions.update_organization(access=staff_access(obj, request.user), name=obj.name, plan=obj.plan)
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc
        others = [name for name in form.changed_data if name not in ("name", "plan")]
        if others:
            obj.save(update_fields=others)

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        try:
            actions.delete_organization(access=staff_access(obj, request.user))
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # rows deleted without delete_organization (its checks, its audit row)
        return found

    def get_readonly_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        # As a peer's names: the slug is stored as text wherever federation refers to the org (other orgs'
        # policies, agents' and remote tasks' addresses, on this instance and on peers), so a changed slug
        # silently stopped those rules matching and those addresses reaching it. So it is set once.
        fixed = ("slug",) if obj is not None else ()
        return (*fixed, *super().get_readonly_fields(request, obj))


@admin.register(Membership)
class MembershipAdmin(ActionAdmin, OrgOwnedAdmin):
    """Role changes and removals go through apps.orgs.actions, as from the console and the API: the same rules (an
    org keeps its last owner) and the org's audit log. A refused one saves nothing and says why."""

    list_display = ("membership", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "organization__slug")
    list_select_related = ("organization", "user")  # type: ignore[assignment]
    raw_id_fields = ("user", "organization")
    actions = ["remove_selected"]

    @admin.display(description="membership", ordering="user__email")
    def membership(self, membership: Membership) -> str:
        # Membership.__str__ shows ids ("12@3:owner"); staff look for people and orgs by their names.
        return f"{membership.user.email} @ {membership.organization.slug} : {membership.role}"

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> tuple[str, ...]:
        # Who and which org are what a membership is: no action moves one to another person or org (staff change
        # its role or remove it).
        fixed = ("user", "organization") if obj is not None else ()
        return (*fixed, *super().get_readonly_fields(request, obj))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        # Django's bulk delete removes rows without remove_member (its last-owner rule, its audit row):
        # "Remove selected members" takes its place.
        found.pop("delete_selected", None)
        return found

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        if "role" in form.changed_data:
            try:
                actions.change_role(access=staff_access(obj.organization, request.user), membership=obj, role=obj.role)
            except HermesAPIError as exc:
                raise AdminRefusal(str(exc.detail)) from exc

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        try:
            actions.remove_member(access=staff_access(obj.organization, request.user), membership=obj)
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    @admin.action(description="Remove selected members", permissions=["delete"])
    def remove_selected(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        rows = list(queryset.select_related("organization", "user"))
        removed = 0
        for membership in rows:  # one at a time: a refused one (a last owner) leaves the others removed
            try:
                actions.remove_member(access=staff_access(membership.organization, request.user), membership=membership)
            except HermesAPIError as exc:
                self.message_user(request, f"{self.membership(membership)}: {exc.detail}", messages.WARNING)
            else:
                removed += 1
        level = messages.SUCCESS if removed else messages.WARNING
        self.message_user(request, f"Removed {removed} of {len(rows)} member(s).", level)


@admin.register(APIKey)
class APIKeyAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    # Read-only: an edited key could carry scopes no key may hold (org:billing, org:delete) or move to another
    # org, unaudited, and an added one would have no secret. Keys are made by their org (console, API); staff may
    # only revoke, through the audited action. The digest is useless to staff and the plaintext never exists here.
    list_display = ("name", "display", "organization", "created_by", "expires_at", "revoked_at", "last_used_at")
    search_fields = ("name", "prefix", "last_four", "organization__slug")
    exclude = ("digest",)
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking changes a key (and cuts off whatever uses it, in any org): staff who may only view keys must
        # not. The model permission, not has_change_permission(), which is False for everyone (read-only admin).
        return bool(getattr(request.user, "is_staff", False)) and request.user.has_perm("orgs.change_apikey")

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        keys = [key for key in queryset if key.revoked_at is None]
        for key in keys:
            actions.staff_revoke_api_key(key=key, actor=request.user)
        self.message_user(request, f"Revoked {len(keys)} key(s); streams opened with them are closed.")


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    # Read-only like keys: an edited invitation could grant any role, unaudited.
    list_display = ("email", "organization", "role", "expires_at", "accepted_at", "revoked_at")
    search_fields = ("email", "organization__slug")
    exclude = ("digest",)
    raw_id_fields = ("organization", "invited_by", "accepted_by")
