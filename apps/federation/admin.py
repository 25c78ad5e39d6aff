"""Staff admin for federation, with DLQ actions (requeue / discard) that go through the same actions as the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import (
    ActionAdmin,
    AdminRefusal,
    AuditLogAdmin,
    OrgOwnedAdmin,
    OrgOwnedInline,
    ReadOnlyAdminMixin,
)
from apps.core.errors import HermesAPIError
from apps.core.permissions import staff_access
from apps.federation import actions, selectors
from apps.federation.addresses import InvalidAddress, validate_pattern
from apps.federation.models import (
    Contact,
    DeliveryAttempt,
    FederatedTask,
    FederationAuditEvent,
    InboxEntry,
    LinkKey,
    Message,
    Outbox,
    Peer,
    Policy,
    RemoteTask,
    RemoteTaskEvent,
)


class LinkKeyInline(admin.TabularInline):
    model = LinkKey
    fields = ("version", "state", "fingerprint", "created_at", "promoted_at", "retired_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are added with `manage.py federation_keys add` or the API (the secret is shown once)


_RENAME_HINT = (
    " Fixed once the peer is added: addresses, remote tasks and policies (`*@name`) refer to the link by its names. "
    "To rename a link, add a new peer with the new names (and its keys), then disable this one."
)


class PeerAdminForm(forms.ModelForm):
    class Meta:
        model = Peer
        fields = ("name", "base_url", "local_name", "status")
        help_texts = {
            "name": "How this instance calls the peer (addresses use org@name)." + _RENAME_HINT,
            "local_name": "The name the peer uses for this instance." + _RENAME_HINT,
        }


@admin.register(Peer)
class PeerAdmin(ActionAdmin):
    form = PeerAdminForm
    list_display = ("name", "base_url", "local_name", "status", "created_at")
    list_filter = ("status",)
    readonly_fields = ("slow_until",)
    inlines = [LinkKeyInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Peer | None = None) -> tuple[str, ...]:
        # The names are stored as text wherever the link is referred to (RemoteTask.agent_address,
        # FederatedTask.reply_to, Agent.federation_address, Policy.remote, the peer's own row for us): a rename
        # orphaned in-flight remote tasks and stopped `*@name` rules from matching. So they are set once.
        fixed = ("name", "local_name") if obj is not None else ()
        return (*fixed, *super().get_readonly_fields(request, obj))

    def save_model(self, request: HttpRequest, obj: Peer, form: Any, change: bool) -> None:
        status = obj.status
        if change:
            # Field by field through the actions, each audited (a changed base_url was in no log). The status
            # changes through set_peer_status below, as from the API and the console: enabling a link sends what
            # waited for it at once (the rows kept their next attempt times, hours away for a long backoff).
            obj.status = form.initial["status"]
            if "base_url" in form.changed_data:
                try:
                    actions.set_peer_base_url(obj, obj.base_url, actor=request.user)
                except ValidationError as exc:  # the form checked the same rules: only a race gets here
                    raise AdminRefusal(" ".join(exc.messages)) from exc
        else:
            # Added through the action (its checks, its audit row), as from the API, console and command.
            try:
                added = actions.create_peer(
                    name=obj.name, base_url=obj.base_url, local_name=obj.local_name, actor=request.user
                )
            except HermesAPIError as exc:
                raise AdminRefusal(str(exc.detail)) from exc
            obj.pk = added.pk
            obj.refresh_from_db()  # the admin links to the row, logs it and saves its inlines under it
        if status != obj.status:
            actions.set_peer_status(obj, status, actor=request.user)
        # Saved all the same (the allowlist may be about to change), but said at once, as the API and command do.
        if blocked := actions.delivery_blocked_reason(obj):
            messages.warning(request, f"Deliveries to this peer will be refused: {blocked}")

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        peer = self.get_object(request, unquote(object_id))
        if peer is not None and self.has_delete_permission(request, peer) and selectors.peer_has_history(peer):
            # Django would list the protected messages and inbox entries as object types this account may not
            # delete, which reads as a permission problem; the real answer is that the link cannot go.
            self.message_user(request, _undeletable(peer), messages.ERROR)
            return redirect(reverse("admin:federation_peer_change", args=[peer.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: Peer) -> None:
        # Through the action: audited (a deleted link was in no log), and refused should it carry a message by now.
        try:
            actions.delete_peer(obj, actor=request.user)
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Peer]) -> None:
        # The confirmation page refused a selection with history (get_deleted_objects); one that got a message
        # since is kept and said.
        for peer in queryset.order_by("pk"):
            try:
                actions.delete_peer(peer, actor=request.user)
            except HermesAPIError as exc:
                self.message_user(request, str(exc.detail), messages.ERROR)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # "Delete selected peers" from the list: the confirmation page lists what stops it, in these words.
        kept = [_undeletable(peer) for peer in objs if selectors.peer_has_history(peer)]
        if kept:
            return deleted, counts, set(), kept
        return deleted, counts, perms_needed, protected


def _undeletable(peer: Peer) -> str:
    return (
        f"The peer '{peer.name}' has message history (sent messages or inbox entries, which are the delivery "
        "record), so it cannot be deleted: disable the link instead (Status: Disabled)."
    )


@admin.register(Contact)
class ContactAdmin(ActionAdmin, OrgOwnedAdmin):
    """Changes go through the contact actions, which write them to the org's audit log (as the console's)."""

    list_display = ("name", "address", "organization", "created_at")
    search_fields = ("name", "address")

    def get_readonly_fields(self, request: HttpRequest, obj: Contact | None = None) -> tuple[str, ...]:
        # The address is what the entry is (another address is another contact), and an entry stays in its org.
        fixed = ("organization", "address") if obj is not None else ()
        return (*fixed, *super().get_readonly_fields(request, obj))

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        access = staff_access(obj.organization, request.user)
        try:
            if change:
                actions.update_contact(obj, name=obj.name, notes=obj.notes, access=access)
            else:
                # Stored canonical, and refused when the book has the address, as from the console and the API.
                added = actions.create_contact(
                    org=obj.organization, name=obj.name, address=obj.address, notes=obj.notes, access=access
                )
                obj.pk, obj.address = added.pk, added.address
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc

    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        actions.delete_contact(obj, access=staff_access(obj.organization, request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        for contact in queryset.select_related("organization"):
            actions.delete_contact(contact, access=staff_access(contact.organization, request.user))


class PolicyAdminForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = ("organization", "local_agent", "remote", "effect", "reason")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        # The rules of actions.set_policy: local_agent lower-cased and one of the org's agents, remote canonical.
        org = data.get("organization")
        if org is not None:
            try:
                data["local_agent"] = actions.check_local_agent(org, data.get("local_agent") or "")
            except HermesAPIError as exc:
                self.add_error("local_agent", str(exc.detail))
        if data.get("remote"):
            try:
                data["remote"] = validate_pattern(data["remote"])
            except InvalidAddress as exc:
                self.add_error("remote", str(exc))
        return data


@admin.register(Policy)
class PolicyAdmin(ActionAdmin, OrgOwnedAdmin):
    """Changes go through the policy actions, as through the API: they reach every process's cached decisions and
    the org's audit log."""

    form = PolicyAdminForm
    list_display = ("organization", "local_agent", "remote", "effect", "reason")
    list_filter = ("effect",)

    def get_readonly_fields(self, request: HttpRequest, obj: Policy | None = None) -> tuple[str, ...]:
        # A rule is the one for its (org, local agent, remote) pair: staff change what it says, and a rule for
        # another pair is another rule (added beside it, as the API and console do).
        fixed = ("organization", "local_agent", "remote") if obj is not None else ()
        return (*fixed, *super().get_readonly_fields(request, obj))

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        try:
            saved = actions.save_policy(
                org=obj.organization,
                remote=obj.remote,
                effect=obj.effect,
                local_agent=obj.local_agent,
                reason=obj.reason,
                access=staff_access(obj.organization, request.user),
            )
        except HermesAPIError as exc:
            raise AdminRefusal(str(exc.detail)) from exc
        obj.pk = saved.rule.pk  # the admin links to the saved rule
        if warning := actions.unknown_peer_warning(saved.rule.remote):
            messages.warning(request, warning)

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        actions.delete_policy(obj, access=staff_access(obj.organization, request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        for rule in queryset.select_related("organization"):
            actions.delete_policy(rule, access=staff_access(rule.organization, request.user))


class DeliveryRecordAdmin(ReadOnlyAdminMixin, OrgOwnedAdmin):
    """Messages, their delivery state and the inbox are evidence (signed receipts, dedup state, the attempt log):
    staff read them here, and change them only through the audited actions (requeue / discard)."""


@admin.register(Message)
class MessageAdmin(DeliveryRecordAdmin):
    list_display = ("id", "organization", "type", "recipient", "created_at")
    list_filter = ("type",)
    search_fields = ("id", "recipient")


class DeliveryAttemptInline(OrgOwnedInline):
    model = DeliveryAttempt
    fields = ("number", "created_at", "duration_ms", "http_status", "error", "response_excerpt", "outcome")
    readonly_fields = fields


@admin.register(Outbox)
class OutboxAdmin(DeliveryRecordAdmin):
    """The DLQ for staff: filter by status "Dead-lettered", inspect attempts inline, requeue or discard."""

    # The error first (it was off-screen below ~1900 px), searchable ("policy_denied"), and by peer.
    list_display = ("message", "organization", "status", "last_error", "attempts", "updated_at")
    list_filter = ("status", "message__peer")
    search_fields = ("message__id", "message__recipient", "last_error")
    readonly_fields = ("payload",)
    list_select_related = ("organization", "message")  # type: ignore[assignment]
    inlines = [DeliveryAttemptInline]
    actions = ["requeue_selected", "discard_selected"]

    @admin.display(description="Payload")
    def payload(self, outbox: Outbox) -> str:
        return format_html("<pre>{}</pre>", json.dumps(outbox.message.payload, indent=2, ensure_ascii=False))

    # Actions need a permission of their own: with change permission gone (the rows are read-only), Django would
    # otherwise offer none. Both go through the audited DLQ actions, as from the API. They change the row (a
    # discard for good), so they need the change permission: the view permission let a read-only staff member
    # discard dead letters.
    def has_dlq_permission(self, request: HttpRequest) -> bool:
        return bool(getattr(request.user, "is_staff", False)) and request.user.has_perm("federation.change_outbox")

    @admin.action(description="Requeue selected dead letters", permissions=["dlq"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[Outbox]) -> None:
        self._apply(request, queryset, actions.requeue, "Requeued", "admin requeue")

    @admin.action(description="Discard selected dead letters", permissions=["dlq"])
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[Outbox]) -> None:
        self._apply(request, queryset, actions.discard, "Discarded", "admin discard")

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Outbox],
        operation: Callable[..., list[Outbox]],
        verb: str,
        reason: str,
    ) -> None:
        # Counted before the operation: afterwards the moved rows no longer match a status-filtered changelist
        # ("Requeued 2 of 0").
        rows = list(queryset.select_related("message", "message__peer", "organization"))
        done = operation(rows, actor=request.user, reason=reason)
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(request, f"{verb} {len(done)} of {len(rows)} (only dead letters move).", level)


@admin.register(InboxEntry)
class InboxEntryAdmin(DeliveryRecordAdmin):
    list_display = ("message_id", "organization", "sender", "type", "created_at", "handled_at")
    list_filter = ("type",)
    search_fields = ("message_id", "sender")


@admin.register(FederationAuditEvent)
class FederationAuditEventAdmin(AuditLogAdmin):
    list_display = ("created_at", "event", "organization", "peer", "message_id", "reason")
    list_filter = ("event",)
    search_fields = ("message_id", "reason")

    def get_queryset(self, request: HttpRequest) -> QuerySet[FederationAuditEvent]:
        return FederationAuditEvent.objects.unscoped("staff admin sees every org").select_related(
            "organization", "peer"
        )


# --- Cross-org tasks (read-only for staff: both rows mirror what the messages said) ------------------------------


class RemoteTaskEventInline(OrgOwnedInline):
    model = RemoteTaskEvent
    fields = ("seq", "kind", "state", "data", "created_at")
    readonly_fields = fields


@admin.register(RemoteTask)
class RemoteTaskAdmin(DeliveryRecordAdmin):
    # The requester's mirror of a task on a peer: result relay finds the task through it (read-only, like the
    # messages it came in).
    list_display = ("id", "organization", "agent_address", "state", "last_seq", "updated_at")
    list_filter = ("state",)
    search_fields = ("id", "agent_address", "remote_task_id")
    inlines = [RemoteTaskEventInline]


@admin.register(FederatedTask)
class FederatedTaskAdmin(DeliveryRecordAdmin):
    # The receiver's link from a local task to the requester: results are relayed through it (moving it to
    # another org or deleting it broke that relay).
    list_display = ("task_id", "organization", "agent_slug", "reply_to", "correlation_id", "created_at")
    search_fields = ("task_id", "reply_to", "correlation_id")
