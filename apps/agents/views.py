"""Console pages for agents: list, register by URL (with a card preview) or by hand, detail, marketplace, demo
agents."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods, require_POST

from apps.agents import actions, selectors
from apps.agents.cards import CardError, CardInfo
from apps.agents.forms import AgentManualForm, AgentRegisterForm, AgentURLForm, MarketplaceSearchForm
from apps.agents.models import Visibility
from apps.core.console import hx_redirect, render_console
from apps.core.http import OutboundBlocked
from apps.core.permissions import Access
from apps.orgs.decorators import org_action_required, switch_to_the_org_holding

# The manual form shares the register page with the URL forms: its prefix keeps field names and ids apart.
MANUAL = "manual"


def _access(request: HttpRequest) -> Access:
    return request.access  # type: ignore[attr-defined]


@org_action_required("agents:read")
def agent_list(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    agents = selectors.org_agents(access.org).order_by("name")
    context = {"agents": agents, "can_write": access.allows("agents:write")}
    return render_console(request, "agents/list.html", context)


@org_action_required("agents:write")
@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    """GET: the URL form. POST: register (the action fetches and validates the card again, then stores it)."""
    access = _access(request)
    form = AgentRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            agent = actions.register_agent_by_url(
                org=access.org,
                url=form.cleaned_data["url"],
                by=request.user,
                slug=form.cleaned_data["slug"] or None,
                visibility=form.cleaned_data["visibility"],
            )
        except actions.AgentActionError as exc:
            form.add_error(_error_field(exc), str(exc))
        else:
            messages.success(request, f"Agent {agent.name} registered.")
            return hx_redirect(request, agent_url(agent))
    card = None
    if form.errors and "url" in form.cleaned_data:
        # The answer replaces the whole preview: without the card again, a bad slug left only the slug and
        # visibility fields, and the name, endpoint and skills being registered were gone.
        card = _card_or_error(form, form.cleaned_data["url"])
    context = {
        **_preview_context(access, card),
        "form": form,
        "url_form": AgentURLForm(initial={"url": form.data.get("url", "")}),
    }
    status = 422 if form.errors else 200
    return render_console(request, "agents/register.html", context, partial="preview", status=status)


@org_action_required("agents:write")
@require_http_methods(["GET", "POST"])
def register_manual(request: HttpRequest) -> HttpResponse:
    """Register an agent without a card (the page's third form; errors re-render the whole page)."""
    if request.method == "GET":
        # The address bar shows this URL after a refused submit; reloading it opens the registration page.
        return redirect("agents:register")
    access = _access(request)
    form = AgentManualForm(request.POST, prefix=MANUAL)
    if form.is_valid():
        try:
            agent = actions.register_agent_manually(org=access.org, by=request.user, **form.cleaned_data)
        except actions.AgentActionError as exc:
            form.add_error(_error_field(exc), str(exc))
        else:
            messages.success(request, f"Agent {agent.name} registered.")
            return hx_redirect(request, agent_url(agent))
    context = {"form": AgentRegisterForm(), "url_form": AgentURLForm(), "manual_form": form}
    return render_console(request, "agents/register.html", context, status=422)


@org_action_required("agents:write")
@require_POST
def preview(request: HttpRequest) -> HttpResponse:
    """Fetch the card and show what would be stored; nothing is written until the person confirms."""
    url_form = AgentURLForm(request.POST)
    card = None
    if url_form.is_valid():
        card = _card_or_error(url_form, url_form.cleaned_data["url"])
    form = AgentRegisterForm(initial={"url": url_form.data.get("url", ""), "visibility": Visibility.PRIVATE})
    context = {**_preview_context(_access(request), card), "url_form": url_form, "form": form}
    status = 422 if url_form.errors else 200
    return render_console(request, "agents/register.html", context, partial="preview", status=status)


def _card_or_error(form: AgentURLForm, url: str) -> CardInfo | None:
    """The card at `url` as registering it would store it, or None with the reason on the form's URL field.
    Credentials in the URL are refused before anything is fetched: it would be requested (and logged) with them."""
    try:
        actions.refuse_credentials(url)
        return selectors.preview_agent_card(url)
    except (CardError, OutboundBlocked, actions.AgentActionError) as exc:
        form.add_error("url", str(exc))
        return None


def _preview_context(access: Access, card: CardInfo | None) -> dict[str, Any]:
    """What the preview partial shows besides its forms: the card, and the org's agents already at its endpoint."""
    return {
        "card": card,
        "manual_form": AgentManualForm(prefix=MANUAL),
        # Registering the same endpoint again is allowed (another slug, another visibility), but rarely meant.
        "same_endpoint": list(selectors.org_agents(access.org).filter(url=card.url)) if card else [],
    }


def _error_field(exc: actions.AgentActionError) -> str | None:
    for field in ("slug", "url", "visibility"):
        if field in exc.details:
            return field
    return "slug" if exc.code == "slug_taken" else "url"


def agent_url(agent: Any) -> str:
    from django.urls import reverse

    return reverse("agents:detail", args=[agent.pk])


@org_action_required("agents:read")
def detail(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The org's own agent, or a public one it may use (read-only); anything else is a 404."""
    access = _access(request)
    try:
        agent = selectors.get_usable_agent(access.org, agent_id)
    except Http404:
        pk = selectors.as_uuid(agent_id)  # a malformed id stays a plain 404
        holder = switch_to_the_org_holding(request, lambda org: selectors.org_agents(org).filter(pk=pk).exists())
        if holder is not None:
            return holder
        raise
    own = agent.organization_id == access.org.pk
    context = {
        "agent": agent,
        "own": own,
        "can_write": own and access.allows("agents:write"),
        "recent_tasks": _recent_tasks(access, agent),
    }
    return render_console(request, "agents/detail.html", context, partial="agent_state")


def _recent_tasks(access: Access, agent: Any) -> list[Any]:
    from apps.tasks.selectors import tasks_for_org

    return list(tasks_for_org(access.org).filter(agent=agent).order_by("-created_at")[:10])


@org_action_required("agents:write")
@require_POST
def refresh(request: HttpRequest, agent_id: str) -> HttpResponse:
    access = _access(request)
    agent = selectors.get_org_agent(access.org, agent_id)
    try:
        agent = actions.refresh_agent_card(agent, by=request.user)
        messages.success(request, f"Card of {agent.name} refreshed.")
    except actions.AgentActionError as exc:
        messages.error(request, f"Could not refresh the card: {exc}")
        agent = selectors.get_org_agent(access.org, agent_id)
    context = {"agent": agent, "own": True, "can_write": True, "recent_tasks": _recent_tasks(access, agent)}
    return render_console(request, "agents/detail.html", context, partial="agent_state")


@org_action_required("agents:write")
@require_POST
def visibility(request: HttpRequest, agent_id: str) -> HttpResponse:
    access = _access(request)
    agent = selectors.get_org_agent(access.org, agent_id)
    try:
        agent = actions.set_visibility(agent, request.POST.get("visibility", ""), by=request.user)
        messages.success(request, f"{agent.name} is now {agent.get_visibility_display().lower()}.")
    except actions.AgentActionError as exc:
        messages.error(request, str(exc))
    return redirect("agents:detail", agent.pk)


@org_action_required("agents:write")
@require_POST
def delete(request: HttpRequest, agent_id: str) -> HttpResponse:
    access = _access(request)
    agent = selectors.get_org_agent(access.org, agent_id)
    if actions.delete_agent(agent, by=request.user):
        messages.success(request, f"Agent {agent.name} deleted.")
    else:
        messages.success(
            request,
            f"Agent {agent.name} deleted. Tasks ran on it, so it is kept for their timelines (retired): it is in "
            "no list and takes no new task.",
        )
    return hx_redirect(request, "/agents/")


@org_action_required("agents:read")
def marketplace(request: HttpRequest) -> HttpResponse:
    form = MarketplaceSearchForm(request.GET or None)
    query = form.cleaned_data["q"].strip() if form.is_valid() else ""
    agents = selectors.marketplace_agents(query or None).order_by("-created_at", "name")
    page = Paginator(agents, 24).get_page(request.GET.get("page"))
    context = {"form": form, "query": query, "page": page}
    return render_console(request, "agents/marketplace.html", context, partial="results")


@org_action_required("agents:write")
@require_POST
def assign_demo(request: HttpRequest) -> HttpResponse:
    """Add Hermes' built-in demo agents (echo, summarizer, calculator, slow, flaky) to the org, once."""
    result = actions.assign_demo_agents(org=_access(request).org, by=request.user)
    said = []
    if result.created:
        said.append(f"Added {len(result.created)} demo agents: {', '.join(agent.name for agent in result.created)}.")
    if result.restored:
        names = ", ".join(agent.name for agent in result.restored)
        said.append(f"Brought back {names}, deleted earlier (with its tasks' history).")
    if said:
        messages.success(request, " ".join(said))
    else:
        messages.info(request, "Your organization already has every demo agent; their cards were refreshed.")
    return redirect("agents:list")
