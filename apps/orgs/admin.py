from __future__ import annotations

from django.contrib import admin

from apps.core.admin import OrgOwnedAdmin
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
class APIKeyAdmin(OrgOwnedAdmin):
    # The digest is useless to staff and the plaintext never exists here: show only what identifies a key.
    list_display = ("name", "display", "organization", "created_by", "expires_at", "revoked_at", "last_used_at")
    search_fields = ("name", "prefix", "last_four", "organization__slug")
    exclude = ("digest",)
    readonly_fields = ("prefix", "last_four", "last_used_at", "last_used_ip", "rotated_to", "created_by")
    raw_id_fields = ("organization",)


@admin.register(Invitation)
class InvitationAdmin(OrgOwnedAdmin):
    list_display = ("email", "organization", "role", "expires_at", "accepted_at", "revoked_at")
    search_fields = ("email", "organization__slug")
    exclude = ("digest",)
    raw_id_fields = ("organization", "invited_by", "accepted_by")
