from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from apps.agents import actions
from apps.agents.actions import CARD_FIELDS
from apps.agents.models import Agent, Visibility
from apps.core.admin import ActionAdmin, AdminRefusal, OrgOwnedAdmin

# Staff may fix names (of an agent registered by hand) and visibility; where an agent lives and what it can do
# comes from its card. Not the slug (shown read-only, as a peer's names): federation addresses (echo.acme@paris)
# and policies' `local_agent` name the agent by it, here and on peers, so a slug changed by staff silently broke
# them for the org.
EDITABLE = ("name", "description", "visibility")


@admin.register(Agent)
class AgentAdmin(ActionAdmin, OrgOwnedAdmin):
    """Changes go through apps.agents.actions (validation and the audit trail), never a bare save(); one they
    refuse saves nothing and shows only why (ActionAdmin)."""

    list_display = (
        "name", "slug", "organization", "visibility", "is_demo", "streaming", "online", "retired_at", "created_at"
    )  # fmt: skip
    list_filter = (
        "visibility",
        "is_demo",
        "protocol_version",
        ("last_seen_at", admin.EmptyFieldListFilter),
        ("retired_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("name", "slug", "description", "url", "federation_address", "organization__slug")
    list_select_related = ("organization", "created_by")  # type: ignore[assignment]
    raw_id_fields = ("organization", "created_by")
    actions = ("refresh_cards", "make_public", "make_private")
    fieldsets = (
        (None, {"fields": ("organization", "name", "slug", "description", "visibility")}),
        (
            "From the agent card",
            {"fields": ("version", "url", "card_url", "federation_address", "protocol_version", "capabilities")},
        ),
        ("Skills and card", {"fields": ("skills_list", "card_pretty"), "classes": ("collapse",)}),
        ("State", {"fields": ("is_demo", "demo_key", "last_seen_at", "last_error", "created_by", "created_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        computed = ["skills_list", "card_pretty", "created_at"]
        # A card-registered agent's name and description come from its card (a refresh rewrites them).
        editable = [name for name in EDITABLE if not (obj is not None and obj.card_url and name in CARD_FIELDS)]
        return [f.name for f in Agent._meta.fields if f.name not in editable] + computed

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        # Staff see retired agents too (deleted while tasks referred to them).
        return Agent.with_retired.unscoped("staff admin sees every org").select_related("organization", "created_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # registering means fetching and validating a card: the API and console do that

    @admin.display(boolean=True, description="online")
    def online(self, agent: Agent) -> bool:
        return agent.is_online

    @admin.display(boolean=True, description="streaming")
    def streaming(self, agent: Agent) -> bool:
        return agent.streaming

    @admin.display(description="skills")
    def skills_list(self, agent: Agent) -> str:
        return ", ".join(agent.skill_names) or "—"

    @admin.display(description="raw card")
    def card_pretty(self, agent: Agent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(agent.card, indent=2, sort_keys=True))

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE}
        if changes:
            original = Agent.with_retired.unscoped("staff admin edits any org's agent").get(pk=obj.pk)
            try:
                actions.update_agent(original, by=request.user, **changes)
            except actions.AgentActionError as exc:
                raise AdminRefusal(str(exc)) from exc

    def delete_model(self, request: HttpRequest, obj: Agent) -> None:
        actions.delete_agent(obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            actions.delete_agent(agent, by=request.user)

    # They change agents of any org (make_public publishes one to the marketplace): the change permission, or a
    # staff member who may only view agents could run them (Django lets an action without `permissions` run for
    # anyone who sees the changelist).
    @admin.action(description="Re-fetch the selected agents' cards", permissions=("change",))
    def refresh_cards(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        agents = list(queryset)
        refreshed = 0
        for agent in agents:
            try:
                actions.refresh_agent_card(agent, by=request.user)
            except actions.AgentActionError as exc:
                self.message_user(request, f"{agent.slug}: {exc}", messages.WARNING)
            else:
                refreshed += 1
        self._report(request, f"Refreshed the cards of {refreshed} of {len(agents)} agent(s).", refreshed)

    @admin.action(description="Make public (marketplace)", permissions=("change",))
    def make_public(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._set_visibility(request, queryset, Visibility.PUBLIC)

    @admin.action(description="Make private", permissions=("change",))
    def make_private(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._set_visibility(request, queryset, Visibility.PRIVATE)

    def _set_visibility(self, request: HttpRequest, queryset: QuerySet[Agent], visibility: str) -> None:
        agents = list(queryset)
        changed = 0
        for agent in agents:
            if agent.visibility == visibility:
                continue  # counted as what the action changed, not as what was selected
            try:
                actions.set_visibility(agent, visibility, by=request.user)
            except actions.AgentActionError as exc:  # e.g. a federated agent stays private
                self.message_user(request, f"{agent.slug}: {exc}", messages.WARNING)
            else:
                changed += 1
        self._report(request, f"Made {changed} of {len(agents)} agent(s) {visibility}.", changed)

    def _report(self, request: HttpRequest, text: str, done: int) -> None:
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)
