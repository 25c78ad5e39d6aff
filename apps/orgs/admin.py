from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import ActionAdmin, AdminRefusal, OrgOwnedAdmin, ReadOnlyAdminMixin
from apps.core.errors import HermesAPIError
from apps.core.permissions import staff_access
from apps.orgs import actions
from apps.orgs.models import APIKey, Invitation, Membership, Organization, RetiredOrgSlug


class OrganizationAdminForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = ("name", "plan")  # what staff may change; the slug and creator are shown read-only


@admin.register(Organization)
class OrganizationAdmin(ActionAdmin):
    form = OrganizationAdminForm
    list_display = ("slug", "name", "plan", "created_at")
    list_filter = ("plan",)
    search_fields = ("slug", "name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # An org is created by a person, who becomes its first owner, in the console or the API
        # (create_organization). Added here it had no owner, no audit row and an unchecked slug (`DEMO` beside
        # `demo`).
        return False

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        # Name and plan through update_organization, as the console and the API change them: the org's audit log
        # shows staff's changes too (a plan changed here left no trace there).
        try:
            actions.update_organization(access=staff_access(obj, request.user), name=obj.name, plan=obj.plan)
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        try:
            actions.delete_organization(access=staff_access(obj, request.user))
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # rows deleted without delete_organization (its checks, its audit row)
        return found

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        # delete_organization (delete_model) removes every row the org owns itself, as for the owner's DELETE
        # /api/v1/orgs/<slug>. Django asked for the delete permission on each of them, which the read-only
        # admins (messages, outbox, inbox, federated tasks, audit logs, tasks) give nobody: an org with any such
        # history could not be deleted here, even by a superuser. The confirmation still lists what goes, and
        # what stops it (other orgs' tasks on its public agents, which delete_organization refuses too).
        return deleted, counts, set(), protected

    def get_readonly_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        # As a peer's names: the slug is stored as text wherever federation refers to the org (other orgs'
        # policies, agents' and remote tasks' addresses, on this instance and on peers), so a changed slug
        # silently stopped those rules matching and those addresses reaching it. So it is set once. Who created
        # the org is history: it changed here with no audit row.
        return ("slug", "created_by", *super().get_readonly_fields(request, obj))


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

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Memberships come from invitations (invite_member, accept_invitation: the inviter's rights, the invitee's
        # consent, the audit log) and from creating an org. Added here with a bare save(), a staff member who
        # could only add memberships made themself an owner of any org, unaudited.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> tuple[str, ...]:
        # Who and which org are what a membership is: no action moves one to another person or org (staff change
        # its role or remove it).
        return ("user", "organization", *super().get_readonly_fields(request, obj))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        # Django's bulk delete removes rows without remove_member (its last-owner rule, its audit row):
        # "Remove selected members" takes its place.
        found.pop("delete_selected", None)
        return found

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
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
        revoked = sum(self._revoke(request, key) for key in queryset if key.revoked_at is None)
        level = messages.SUCCESS if revoked else messages.WARNING
        self.message_user(request, f"Revoked {revoked} key(s); streams opened with them are closed.", level)

    def _revoke(self, request: HttpRequest, key: APIKey) -> bool:
        """Revoke `key`; whether this call did. The changelist's read is stale by the time it gets here: two tabs
        revoking the same keys both said "Revoked 2 key(s)" while only one revoked them. So the key is read again
        under the locks the action takes, in its order (the org's row, then the key's), and counted only when it
        was still unrevoked."""
        with transaction.atomic():
            list(Organization.objects.select_for_update(no_key=True).filter(pk=key.organization_id).values_list("pk"))
            fresh = APIKey.objects.for_org(key.organization_id).select_for_update().filter(pk=key.pk)
            if not fresh.filter(revoked_at=None).exists():
                return False
            actions.staff_revoke_api_key(key=key, actor=request.user)
            return True


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    # Read-only like keys: an edited invitation could grant any role, unaudited.
    list_display = ("email", "organization", "role", "expires_at", "accepted_at", "revoked_at")
    search_fields = ("email", "organization__slug")
    exclude = ("digest",)
    raw_id_fields = ("organization", "invited_by", "accepted_by")


@admin.register(RetiredOrgSlug)
class RetiredOrgSlugAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Read-only: releasing one would hand other orgs' trust in the deleted org to whoever registers it next.
    list_display = ("slug", "retired_at")
    search_fields = ("slug",)
