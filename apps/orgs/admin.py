from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import OrgOwnedAdmin, ReadOnlyAdminMixin
from apps.orgs import actions
from apps.orgs.models import APIKey, Invitation, Membership, Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "plan", "created_at")
    list_filter = ("plan",)
    search_fields = ("slug", "name")


@admin.register(Membership)
class MembershipAdmin(OrgOwnedAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "organization__slug")
    raw_id_fields = ("user", "organization")


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
