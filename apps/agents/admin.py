from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
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
        if obj is not None and obj.retired_at is not None:
            # Retired: kept only as its tasks' agent (docs/agents.md). The actions read agents through
            # Agent.objects, which holds no retired one: an edit was a 500, and making it public would have put a
            # deleted agent back in the marketplace.
            return [f.name for f in Agent._meta.fields] + computed
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

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], add: bool = False, change: bool = False,
        form_url: str = "", obj: Agent | None = None,
    ) -> HttpResponse:  # fmt: skip
        if obj is not None and obj.retired_at is not None:  # nothing on the page can be changed: no Save buttons
            context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        if obj.retired_at is not None:
            # Every field is read-only; a form posted anyway (opened before the agent was deleted) saves nothing
            # and says so, instead of "was changed successfully" over an unchanged row.
            raise AdminRefusal(RETIRED_AS_IT_IS)
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE}
        if changes:
            original = Agent.with_retired.unscoped("staff admin edits any org's agent").get(pk=obj.pk)
            try:
                actions.update_agent(original, by=request.user, **changes)
            except actions.AgentActionError as exc:
                raise AdminRefusal(str(exc)) from exc

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        # delete_agent retires an agent that tasks ran on instead of deleting it, and its tasks stay. Django listed
        # those tasks as deleted too, and refused the whole delete because TaskAdmin (read-only) lets nobody
        # delete a task: no one, not even a superuser, could take such an agent down here. The confirmation
        # lists them for what happens to them; only the agents no task ran on go through Django's own listing.
        agents = list(objs)
        task_counts = _task_counts(agents)
        gone = [agent for agent in agents if agent.pk not in task_counts]
        deleted, counts, perms_needed, protected = (
            super().get_deleted_objects(gone, request) if gone else ([], {}, set(), [])
        )
        kept = [agent for agent in agents if agent.pk in task_counts]
        for agent in kept:
            if agent.retired_at is not None:
                deleted.append(format_html("Agent: {} — already retired: left as it is", agent))
            else:
                deleted.append(
                    format_html(
                        "Agent: {} — retired, not deleted: its {} task(s) keep it for their timelines; it leaves "
                        "every list and takes no task",
                        agent,
                        task_counts[agent.pk],
                    )
                )
        if kept:
            counts = {**counts, "agents retired (their tasks kept)": len(kept)}
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Agent) -> None:
        if obj.retired_at is not None and _task_counts([obj]):
            # Retiring it again would only rewrite when, and audit it twice. (One whose tasks are all gone since,
            # with the org that sent them, is deleted for good.)
            raise AdminRefusal(RETIRED_AS_IT_IS)
        actions.delete_agent(obj, by=request.user)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if IS_POPUP_VAR in request.POST or not Agent.with_retired.unscoped("staff admin").filter(pk=obj_id).exists():
            return super().response_delete(request, obj_display, obj_id)
        # Django would say "was deleted successfully" of a row that stays (retired).
        self.message_user(
            request,
            f"The agent “{obj_display}” was retired, not deleted: tasks ran on it, and they keep it. It is in no "
            "list and takes no task.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:agents_agent_changelist", current_app=self.admin_site.name))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        agents = list(queryset)
        task_counts = _task_counts(agents)
        retired: list[str] = []
        skipped = 0
        for agent in agents:
            if agent.retired_at is not None and agent.pk in task_counts:  # as delete_model
                skipped += 1
            elif not actions.delete_agent(agent, by=request.user):
                retired.append(agent.slug)
        # Django's "Successfully deleted N agents" counts the whole selection.
        if retired:
            self.message_user(
                request,
                f"Of these, {len(retired)} {'was' if len(retired) == 1 else 'were'} retired, not deleted (tasks ran "
                f"on them, and keep them): {', '.join(retired)}.",
                messages.WARNING,
            )
        if skipped:
            self.message_user(request, _retired_left(skipped), messages.WARNING)

    # They change agents of any org (make_public publishes one to the marketplace): the change permission, or a
    # staff member who may only view agents could run them (Django lets an action without `permissions` run for
    # anyone who sees the changelist).
    @admin.action(description="Re-fetch the selected agents' cards", permissions=("change",))
    def refresh_cards(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        agents, retired = _split_retired(queryset)
        refreshed = 0
        for agent in agents:
            try:
                actions.refresh_agent_card(agent, by=request.user)
            except actions.AgentActionError as exc:
                self.message_user(request, f"{agent.slug}: {exc}", messages.WARNING)
            else:
                refreshed += 1
        self._report(request, f"Refreshed the cards of {refreshed} of {len(agents)} agent(s).", refreshed, retired)

    @admin.action(description="Make public (marketplace)", permissions=("change",))
    def make_public(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._set_visibility(request, queryset, Visibility.PUBLIC)

    @admin.action(description="Make private", permissions=("change",))
    def make_private(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._set_visibility(request, queryset, Visibility.PRIVATE)

    def _set_visibility(self, request: HttpRequest, queryset: QuerySet[Agent], visibility: str) -> None:
        agents, retired = _split_retired(queryset)
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
        self._report(request, f"Made {changed} of {len(agents)} agent(s) {visibility}.", changed, retired)

    def _report(self, request: HttpRequest, text: str, done: int, retired: int) -> None:
        if retired:
            self.message_user(request, _retired_left(retired), messages.WARNING)
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)


RETIRED_AS_IT_IS = (
    "This agent was deleted while tasks referred to it (retired): it is kept, as it is, for their history."
)


def _split_retired(queryset: QuerySet[Agent]) -> tuple[list[Agent], int]:
    """The selection's live agents, and how many retired ones it held. The actions read an agent through
    Agent.objects, which holds no retired one (a 500 that also undid the rest of the selection), and a retired
    agent is kept as it was for its tasks: the admin actions leave it alone, and say so, as they do a federated
    agent they may not change."""
    agents = list(queryset)
    live = [agent for agent in agents if agent.retired_at is None]
    return live, len(agents) - len(live)


def _retired_left(count: int) -> str:
    if count == 1:
        return "1 retired agent left as it is (deleted while tasks referred to it: kept for their history)."
    return f"{count} retired agents left as they are (deleted while tasks referred to them: kept for their history)."


def _task_counts(agents: list[Agent]) -> dict[Any, int]:
    """How many tasks refer to each of `agents` (those with none are left out): those agents are retired, not
    deleted. Counted over every org, as staff act for every org."""
    rows = (
        Agent.with_retired.unscoped("staff admin: the agents being deleted, of any org")
        .filter(pk__in=[agent.pk for agent in agents], tasks__isnull=False)
        .annotate(task_count=Count("tasks"))
        .values_list("pk", "task_count")
    )
    return dict(rows)
