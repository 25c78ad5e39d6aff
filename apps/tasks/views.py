"""Console pages for tasks: send one, a live list, and a detail page with the live timeline (static/js/live.js)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.agents import selectors as agent_selectors
from apps.core.console import hx_redirect, render_console
from apps.core.errors import HermesAPIError
from apps.core.permissions import Access
from apps.orgs import quotas
from apps.orgs.decorators import org_action_required, switch_to_the_org_holding
from apps.tasks import actions, selectors
from apps.tasks.forms import FollowUpForm, TaskFilterForm, TaskForm
from apps.tasks.models import INTERRUPTED_STATES, Task

LIST_LIMIT = 100


def _access(request: HttpRequest) -> Access:
    return request.access  # type: ignore[attr-defined]


def _task_or_404(access: Access, task_id: str) -> Task:
    task = selectors.task_for_org(access.org, task_id)
    if task is None:
        raise Http404("No such task.")
    return task


def _agents(access: Access) -> list[Any]:
    """The agents this person may send a task to: a federated agent's task is a federation request, which needs
    `federation:write` too (refused with a 403 otherwise), so a member's form does not offer one."""
    agents = agent_selectors.usable_agents(access.org).select_related("organization").order_by("name")
    if not access.allows("federation:write"):
        agents = agents.filter(federation_address="")
    return list(agents)


@org_action_required("tasks:read")
def task_list(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    agents = list(selectors.filterable_agents(access.org).order_by("name"))
    form = TaskFilterForm(request.GET or None, agents=agents, org=access.org)
    tasks = selectors.tasks_for_org(access.org).order_by("-created_at", "-pk")
    if form.is_valid():
        if form.cleaned_data["status"]:
            tasks = tasks.filter(state=form.cleaned_data["status"])
        if form.cleaned_data["agent"]:
            tasks = tasks.filter(agent_id=form.cleaned_data["agent"])
    elif form.is_bound:
        # A filter that names no status or agent of this org (a stale or edited link) matches nothing; listing
        # every task under it read as if they matched. The form shows which value is wrong.
        tasks = tasks.none()
    # Keyset paging: `before` names the last task of the previous page (stable while new tasks arrive).
    anchor = selectors.task_for_org(access.org, request.GET["before"]) if request.GET.get("before") else None
    if anchor is not None:
        tasks = tasks.filter(Q(created_at__lt=anchor.created_at) | Q(created_at=anchor.created_at, pk__lt=anchor.pk))
    rows = list(tasks[: LIST_LIMIT + 1])
    older = None
    if len(rows) > LIST_LIMIT:
        rows = rows[:LIST_LIMIT]
        params = request.GET.copy()
        params["before"] = str(rows[-1].pk)
        older = params.urlencode()
    newest = request.GET.copy()
    newest.pop("before", None)
    context = {
        "form": form,
        "tasks": rows,
        "older_query": older,
        "on_older_page": anchor is not None,
        # A page link whose first-task-before is gone (deleted, or an edited link) shows the newest page, and says
        # so: passing it off as the page asked for would hide that tasks were skipped or removed.
        "anchor_lost": bool(request.GET.get("before")) and anchor is None,
        "newest_query": newest.urlencode(),
        "can_send": access.allows("tasks:write"),
        "query": request.GET.urlencode(),
    }
    return render_console(request, "tasks/list.html", context, partial="task_table")


@org_action_required("tasks:write")
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    agents = _agents(access)
    form = TaskForm(request.POST or None, agents=agents, initial={"agent": request.GET.get("agent", "")})
    quota: quotas.QuotaExceeded | None = None
    if request.method == "POST" and form.is_valid():
        try:
            task = actions.create_task(
                org=access.org, agent=form.cleaned_data["agent"], message=form.message(), access=access
            )
        except actions.TaskInputTooLarge as exc:
            form.add_too_large_error(exc)
        except actions.AgentNotUsable:
            form.add_error("agent", "This agent is no longer available to your organization.")
        except quotas.QuotaExceeded as exc:
            # The same daily limit as the API: say which limit, when it resets and how to raise it.
            quota = exc
        except HermesAPIError as exc:  # a federated agent's request refused (policy, unknown or disabled peer)
            exc.run_after_rollback()
            form.add_error("agent", str(exc.detail))
        else:
            messages.success(request, f"Task sent to {task.agent.name}.")
            return hx_redirect(request, reverse("tasks:detail", args=[task.pk]))
    status = 429 if quota else 422 if form.errors else 200
    context = {
        "form": form,
        "has_agents": bool(agents),
        "quota": quota,
        # A datetime, so the notice shows it as every other timestamp and the wait in words, not "in 65253 s".
        "quota_resets_at": datetime.fromisoformat(quota.details["resets_at"]) if quota is not None else None,
    }
    response = render_console(request, "tasks/create.html", context, status=status)
    if quota is not None:
        for name, value in quota.headers.items():
            response[name] = value
    return response


@org_action_required("tasks:read")
def detail(request: HttpRequest, task_id: str) -> HttpResponse:
    access = _access(request)
    task = selectors.task_for_org(access.org, task_id)
    if task is None:
        holder = switch_to_the_org_holding(request, lambda org: selectors.task_for_org(org, task_id) is not None)
        if holder is not None:
            return holder
        raise Http404("No such task.")
    return _detail_page(request, access, task, FollowUpForm())


def _detail_page(
    request: HttpRequest, access: Access, task: Any, follow_up_form: FollowUpForm, *, status: int | None = None
) -> HttpResponse:
    context = {
        "task": task,
        # Canceling or answering a task on a federated agent speaks to another org: federation:write as well.
        "can_write": access.allows("tasks:write")
        and (not task.agent.is_federated or access.allows("federation:write")),
        "waiting_for_input": task.state in INTERRUPTED_STATES,
        "follow_up_form": follow_up_form,
        # Another org's agent its owner deleted or made private: "no longer available", whichever it was (the
        # owner's to know, as the API's `unavailable`: apps.tasks.actions.check_agent_usable).
        "agent_unavailable": task.agent.organization_id != task.organization_id
        and (task.agent.retired_at is not None or not task.agent.is_usable_by(task.organization_id)),
    }
    # htmx asks for the About card alone (live.js, when the task finishes).
    if status is None:
        status = 422 if follow_up_form.errors else 200
    return render_console(request, "tasks/detail.html", context, partial="task_about", status=status)


@org_action_required("tasks:write")
@require_POST
def cancel(request: HttpRequest, task_id: str) -> HttpResponse:
    access = _access(request)
    task = _task_or_404(access, task_id)
    try:
        actions.cancel_task(task, access=access, reason=f"canceled by {request.user} in the console")
        messages.success(request, "Cancel requested: the timeline shows when the agent stops.")
    except actions.TaskNotCancelable as exc:
        messages.error(request, f"Cannot cancel: {exc}.")
    return hx_redirect(request, reverse("tasks:detail", args=[task.pk]))


@org_action_required("tasks:write")
@require_POST
def follow_up(request: HttpRequest, task_id: str) -> HttpResponse:
    access = _access(request)
    task = _task_or_404(access, task_id)
    form = FollowUpForm(request.POST)
    if form.is_valid():
        try:
            message = {"role": "user", "parts": [{"kind": "text", "text": form.cleaned_data["text"]}]}
            actions.continue_task(task, message=message, access=access)
        except actions.TaskNotWaitingForInput as exc:
            messages.error(request, f"Cannot reply: {exc}.")
        except actions.AgentNotUsable as exc:
            # Not the reply's fault: said above the reply box, which keeps what was typed. 409 like the API (the
            # form posts without htmx, so the browser shows the page whatever its status).
            form.add_error(None, str(exc))
            return _detail_page(request, access, task, form, status=409)
        except actions.TaskInputTooLarge as exc:
            form.add_error("text", str(exc))
        else:
            return redirect("tasks:detail", task.pk)
    if not form.errors:
        return redirect("tasks:detail", task.pk)
    # The error goes next to the reply box, with what was typed (it was a banner at the top of the page).
    return _detail_page(request, access, task, form)
