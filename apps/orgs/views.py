"""Console pages of the organization: dashboard, create, switch, settings, members, API keys, usage."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.console import render_console
from apps.orgs import actions
from apps.orgs.decorators import org_action_required
from apps.orgs.forms import OrganizationCreateForm
from apps.orgs.selectors import SESSION_ORG_KEY, memberships_of


def _use_org(request: HttpRequest, org_id: int) -> None:
    """Which org the console acts for is the person's UI choice, kept in their session."""
    request.session[SESSION_ORG_KEY] = org_id


@org_action_required("org:read")
def dashboard(request: HttpRequest) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    return render_console(request, "orgs/dashboard.html", {"org": access.org, "role": access.role})


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    form = OrganizationCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        org = actions.create_organization(
            user=request.user, name=form.cleaned_data["name"], slug=form.cleaned_data["slug"]
        )
        _use_org(request, org.pk)
        messages.success(request, f"Organization {org.name} created. You are its owner.")
        return redirect("orgs:dashboard")
    return render_console(request, "orgs/create.html", {"form": form}, status=422 if form.errors else 200)


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    slug = request.POST.get("org", "")
    membership = next((m for m in memberships_of(request.user) if m.organization.slug == slug), None)
    if membership is None:
        # Same answer for "no such org" and "not yours": the console never confirms another org exists.
        messages.error(request, "You are not a member of that organization.")
    else:
        _use_org(request, membership.organization_id)
        messages.success(request, f"Now working in {membership.organization.name}.")
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = ""
    return redirect(target or "orgs:dashboard")
