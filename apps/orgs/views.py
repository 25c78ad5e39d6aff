"""Console pages of the organization: dashboard, create, switch, settings, members, API keys, usage, audit log."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import resolve, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.console import add_action_errors, filtered_page, hx_redirect, is_fragment_request, render_console
from apps.core.errors import HermesAPIError
from apps.core.models import AuditEvent
from apps.core.permissions import SCOPES, Access, Role, role_refusal
from apps.orgs import actions, quotas, selectors
from apps.orgs.context_processors import NAV, is_section_page
from apps.orgs.decorators import org_action_required, required_action
from apps.orgs.forms import (
    APIKeyForm,
    DeleteOrganizationForm,
    InviteForm,
    OrganizationCreateForm,
    OrganizationSettingsForm,
    RoleForm,
    RotateKeyForm,
)
from apps.orgs.models import PLAN_LIMITS, APIKey, APIKeyState, Invitation, Membership, Plan
from apps.orgs.selectors import SESSION_ORG_KEY, memberships_of


def _use_org(request: HttpRequest, org_id: int) -> None:
    """Which org the console acts for is the person's UI choice, kept in their session."""
    request.session[SESSION_ORG_KEY] = org_id


@org_action_required("org:read")
def dashboard(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    # The "get started" steps this role can take (a member was offered keys, agents and invitations, then a 403).
    can = {
        "keys": access.allows("keys:own") or access.allows("org:admin"),
        "agents": access.allows("agents:write"),
        "tasks": access.allows("tasks:write"),
        "invite": access.allows("org:admin"),
    }
    context = {"org": access.org, "role": access.role, "can": can, **_overview(access)}
    return render_console(request, "orgs/dashboard.html", context)


def _overview(access: Access) -> dict[str, Any]:
    """Counts for the dashboard, each read through the owning app's selectors."""
    from apps.agents.selectors import marketplace_agents, org_agents
    from apps.federation.selectors import dead_letters

    org = access.org
    return {
        "members_count": Membership.objects.for_org(org).count(),
        "agents_count": org_agents(org).count(),
        # The marketplace step only when it has something to show (it sent newcomers to an empty page).
        "public_agents_elsewhere": marketplace_agents().exclude(organization=org).exists(),
        "dead_letters_count": dead_letters(org).count() if access.allows("federation:read") else None,
    }


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
    # Back to the section the switch was made from (the header sends it), but never to an object's page: that
    # object is the old org's, and following the link would switch straight back.
    target = request.POST.get("next") or ""
    if not (url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) and is_section_page(target)):
        target = ""
    if target and membership is not None:
        target = _section_page_for_role(request, target, membership)
    return redirect(target or "orgs:dashboard")


def _section_page_for_role(request: HttpRequest, target: str, membership: Membership) -> str:
    """`target` (a section page), or the section's own page when the role in the org switched to may not open it
    (from "Register an agent", a member of the new org landed on a 403); "" (the dashboard) when it may open
    neither."""
    access = Access(org=membership.organization, role=membership.role, user=request.user)
    page = resolve(urlsplit(target).path)
    view_name, needed = page.view_name, required_action(page.func)
    if needed is None or access.allows(needed):
        return target
    # The section is the header's navigation entry for the page (the longest view-name prefix, as the menu picks).
    label, landing = "the dashboard", ""
    entries = [entry for entry in NAV if view_name.startswith(entry[2])]
    if entries:
        section_label, section, _ = max(entries, key=lambda entry: len(entry[2]))
        section_action = _page_action(section)
        if section_action is None or access.allows(section_action):
            label, landing = f"the {section_label} page", reverse(section)
    messages.info(request, f"{role_refusal(membership.role, needed)} Showing {label} instead.")
    return landing


def _page_action(view_name: str) -> str | None:
    """The action the console page `view_name` requires (`org_action_required` on its view)."""
    return required_action(resolve(reverse(view_name)).func)


# --- Members and invitations ------------------------------------------------------------------------------------


def _access(request: HttpRequest) -> Access:
    return request.access  # type: ignore[attr-defined]


def _member_or_404(access: Access, membership_id: int) -> Membership:
    # Another org's membership id is a 404, exactly like one that does not exist.
    return get_object_or_404(Membership.objects.for_org(access.org).select_related("user"), pk=membership_id)


def _invitable_roles(access: Access) -> list[str]:
    return [role for role in Role.values if role != Role.OWNER or access.allows("org:roles")]


def _members_context(access: Access, invite_form: InviteForm | None = None) -> dict[str, Any]:
    members = list(Membership.objects.for_org(access.org).select_related("user").order_by("user__email"))
    owners = [m for m in members if m.role == Role.OWNER]
    context: dict[str, Any] = {
        "org": access.org,
        "access": access,
        "members": members,
        # The last owner cannot leave (the action refuses it): said by the button, not after a confirmation.
        "sole_owner": len(owners) == 1 and owners[0].user_id == access.user.pk,
        "roles": Role.choices,
        "can_change_roles": access.allows("org:roles"),
        "can_manage": access.allows("org:admin"),
    }
    if access.allows("org:admin"):
        context["invite_form"] = invite_form or InviteForm(roles=_invitable_roles(access))
        context["invitations"] = [
            inv
            for inv in Invitation.objects.for_org(access.org).select_related("invited_by").order_by("-created_at")[:50]
            if inv.state() == "pending"
        ]
    return context


@org_action_required("org:read")
def members(request: HttpRequest) -> HttpResponse:
    return render_console(request, "orgs/members.html", _members_context(_access(request)))


@org_action_required("org:roles")
@require_POST
def change_member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    access = _access(request)
    membership = _member_or_404(access, membership_id)
    form = RoleForm(request.POST)
    status = 200
    if form.is_valid():
        try:
            membership = actions.change_role(access=access, membership=membership, role=form.cleaned_data["role"])
            messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            status = 422
    else:
        messages.error(request, "Choose one of the listed roles.")
        status = 422
    if not is_fragment_request(request):
        return redirect("orgs:members")
    context = {**_members_context(access), "member": membership}
    return render_console(request, "orgs/members.html", context, partial="member_row", status=status)


@org_action_required("org:read")
@require_POST
def remove_member(request: HttpRequest, membership_id: int) -> HttpResponse:
    """Admins remove members, owners remove anyone, and everyone may leave (the action decides)."""
    access = _access(request)
    membership = _member_or_404(access, membership_id)
    leaving = membership.user_id == request.user.pk
    try:
        actions.remove_member(access=access, membership=membership)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return hx_redirect(request, reverse("orgs:members"))
    if leaving:
        request.session.pop(SESSION_ORG_KEY, None)
        messages.success(request, f"You left {access.org.name}.")
        return hx_redirect(request, reverse("orgs:dashboard"))
    messages.success(request, f"{membership.user.email} was removed from {access.org.name}.")
    if is_fragment_request(request):
        # The row disappears (an empty outerHTML swap); the flash message comes out-of-band.
        return render_console(request, "orgs/members.html", _members_context(access), partial="removed")
    return redirect("orgs:members")


@org_action_required("org:admin")
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    form = InviteForm(request.POST, roles=_invitable_roles(access))
    status = 200
    if form.is_valid():
        try:
            issued = actions.invite_member(
                access=access, email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except ValidationError as exc:
            add_action_errors(form, exc)
        except HermesAPIError as exc:
            if exc.status_code == 403:
                raise
            form.add_error("email", str(exc.detail))
        else:
            sent = f"Invitation sent to {issued.invitation.email} as {issued.invitation.get_role_display()}."
            if issued.replaced:  # said, since the link of the earlier email now shows "revoked"
                sent += " It replaces the earlier invitation to this address, whose link no longer works."
            messages.success(request, sent)
            form = InviteForm(roles=_invitable_roles(access))
    if form.errors:
        status = 422
    if not is_fragment_request(request) and status == 200:
        return redirect("orgs:members")
    context = _members_context(access, invite_form=form)
    return render_console(request, "orgs/members.html", context, partial="invitations", status=status)


@org_action_required("org:admin")
@require_POST
def revoke_invitation(request: HttpRequest, invitation_id: int) -> HttpResponse:
    access = _access(request)
    invitation = get_object_or_404(Invitation.objects.for_org(access.org), pk=invitation_id)
    actions.revoke_invitation(access=access, invitation=invitation)
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    if not is_fragment_request(request):
        return redirect("orgs:members")
    return render_console(request, "orgs/members.html", _members_context(access), partial="invitations")


@require_http_methods(["GET", "POST"])
def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link. Anyone holding it sees which org invites them; accepting needs the invited address."""
    invitation = actions.find_invitation(token)
    if invitation is None:
        raise Http404("Unknown invitation")
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        membership = actions.accept_invitation(user=request.user, token=token)
        _use_org(request, membership.organization_id)
        messages.success(request, f"Welcome to {invitation.organization.name}.")
        return redirect("orgs:dashboard")
    user = request.user
    signed_in = user.is_authenticated
    context = {
        "invitation": invitation,
        "state": invitation.state(),
        # Said before the click, not as a 403 after it.
        "wrong_person": signed_in and str(getattr(user, "email", "")).lower() != invitation.email.lower(),
        "already_member": signed_in
        and Membership.objects.for_org(invitation.organization).filter(user_id=user.pk).exists(),
    }
    return render_console(request, "orgs/invitation.html", context)


# --- API keys -------------------------------------------------------------------------------------------------


def _key_issuer_required(access: Access) -> None:
    """Creating and rotating keys (`keys:own`). Seeing and revoking one's own keys needs no more than membership."""
    if not access.allows(actions.key_issue_action(access)):
        raise PermissionDenied(role_refusal(access.role, "keys:own"))


def _key_or_404(access: Access, key_id: int) -> APIKey:
    # Another person's key is a 404 to whoever sees only their own, as in the API.
    return get_object_or_404(selectors.visible_api_keys(access), pk=key_id)


def _keys_context(access: Access, *, form: APIKeyForm | None = None, issued: Any = None) -> dict[str, Any]:
    can_issue = access.allows(actions.key_issue_action(access))
    scopes = [(s, f"{s} — {SCOPES[s]}") for s in SCOPES if s in actions.grantable_scopes(access)]
    keys = list(selectors.visible_api_keys(access).order_by("-created_at")[:200])
    rows = []
    for key in keys:
        state = key.state()
        usable = state in (APIKeyState.ACTIVE, APIKeyState.CREATOR_GONE)  # rotating re-issues a creator_gone key
        rows.append(
            {
                "key": key,
                "state": state,
                "state_label": state.label,
                "usable": usable,
                "can_rotate": usable and key.rotated_to_id is None and actions.can_rotate_key(access, key),
                "can_revoke": usable and actions.can_revoke_key(access, key),
            }
        )
    return {
        "org": access.org,
        "keys": rows,
        "can_issue": can_issue,
        "issue_refusal": "" if can_issue else role_refusal(access.role, "keys:own"),
        "form": (form or APIKeyForm(scopes=scopes)) if can_issue else None,
        "rotate_form": RotateKeyForm(),
        "issued": issued,
    }


@org_action_required()
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    """Everyone sees the keys they created (admins and owners every key of the org); creating one is `keys:own`."""
    access = _access(request)
    if request.method == "POST":
        _key_issuer_required(access)
    context = _keys_context(access)
    status = 200
    if request.method == "POST":
        form = APIKeyForm(request.POST, scopes=context["form"].fields["scopes"].choices)
        if form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            try:
                issued = actions.create_api_key(
                    access=access,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                    rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
                )
            except ValidationError as exc:
                add_action_errors(form, exc)
            else:
                # The plaintext exists only in this response: it is never stored and cannot be shown again.
                context = _keys_context(access, issued=issued)
        if form.errors:
            context["form"], status = form, 422
    response = render_console(request, "orgs/keys.html", context, partial="keys_section", status=status)
    add_never_cache_headers(response)  # the page may carry a plaintext key
    return response


@org_action_required()
@require_POST
def rotate_key(request: HttpRequest, key_id: int) -> HttpResponse:
    access = _access(request)
    _key_issuer_required(access)
    key = _key_or_404(access, key_id)
    form = RotateKeyForm(request.POST)
    grace = timedelta(hours=form.cleaned_data["grace_hours"]) if form.is_valid() else actions.DEFAULT_ROTATION_GRACE
    issued = actions.rotate_api_key(access=access, key=key, grace=grace)
    if grace > timedelta(0):
        messages.success(request, f"Key {key.display} rotated; the old key stops working at its new expiry.")
    else:
        # No grace period: the old key's expiry is now, and "stops working at its new expiry" read as later.
        messages.success(request, f"Key {key.display} rotated; the old key has stopped working.")
    response = render_console(request, "orgs/keys.html", _keys_context(access, issued=issued), partial="keys_section")
    add_never_cache_headers(response)
    return response


@org_action_required()
@require_POST
def revoke_key(request: HttpRequest, key_id: int) -> HttpResponse:
    """Anyone may revoke a key they created, whatever their role now (it only takes access away)."""
    access = _access(request)
    key = actions.revoke_api_key(access=access, key=_key_or_404(access, key_id))
    messages.success(request, f"Key {key.display} revoked: it no longer authenticates.")
    return render_console(request, "orgs/keys.html", _keys_context(access), partial="keys_section")


# --- Settings -------------------------------------------------------------------------------------------------


@org_action_required("org:read")
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    can_rename, can_bill = access.allows("org:admin"), access.allows("org:billing")
    form = _settings_form(access, request.POST or None)
    status = 200
    if request.method == "POST":
        if not (can_rename or can_bill):
            raise PermissionDenied(role_refusal(access.role, "org:admin"))
        if form.is_valid():
            try:
                actions.update_organization(
                    access=access,
                    name=form.cleaned_data["name"] if can_rename else None,
                    plan=form.cleaned_data["plan"] if can_bill else None,
                )
            except ValidationError as exc:
                add_action_errors(form, exc)
            else:
                messages.success(request, "Settings saved.")
                return redirect("orgs:settings")
        status = 422
    return _render_settings(request, access, form=form, status=status)


def _settings_form(access: Access, data: Any = None) -> OrganizationSettingsForm:
    org = access.org
    return OrganizationSettingsForm(
        data,
        initial={"name": org.name, "plan": org.plan},
        can_rename=access.allows("org:admin"),
        can_bill=access.allows("org:billing"),
    )


def _render_settings(
    request: HttpRequest,
    access: Access,
    *,
    form: OrganizationSettingsForm | None = None,
    delete_form: DeleteOrganizationForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The settings page; a refused form comes back bound, with its errors and what was typed."""
    org = access.org
    context = {
        "org": org,
        "form": form or _settings_form(access),
        "can_edit": access.allows("org:admin") or access.allows("org:billing"),
        "can_delete": access.allows("org:delete"),
        "delete_form": delete_form or DeleteOrganizationForm(slug=org.slug),
    }
    return render_console(request, "orgs/settings.html", context, status=status)


@org_action_required("org:delete")
@require_POST
def delete_org(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    form = DeleteOrganizationForm(request.POST, slug=access.org.slug)
    if not form.is_valid():
        return _render_settings(request, access, delete_form=form, status=422)
    name = access.org.name
    try:
        actions.delete_organization(access=access)
    except HermesAPIError as exc:
        if exc.status_code == 403:
            raise
        form.add_error(None, str(exc.detail))
        return _render_settings(request, access, delete_form=form, status=422)
    request.session.pop(SESSION_ORG_KEY, None)
    messages.success(request, f"Organization {name} deleted.")
    return redirect("orgs:dashboard")


# --- Usage and quotas -----------------------------------------------------------------------------------------


@org_action_required("org:read")
def usage(request: HttpRequest) -> HttpResponse:
    access = _access(request)
    data = quotas.usage(access.org)
    today = data["days"][0] if data["days"] else None
    limits = data["limits"]
    context = {
        "org": access.org,
        "usage": data,
        "today": today,
        "tasks_share": _share(today["tasks"] if today else 0, limits["tasks_per_day"]),
        "rpm_share": _share(data["requests_this_minute"] or 0, limits["requests_per_minute"]),
        "plans": [
            {"plan": plan, "label": label, "limits": PLAN_LIMITS[plan], "current": plan == access.org.plan}
            for plan, label in Plan.choices
        ],
        "can_bill": access.allows("org:billing"),
    }
    return render_console(request, "orgs/usage.html", context, partial="usage_panel")


def _share(used: int, limit: int) -> int:
    return min(100, round(100 * used / limit)) if limit else 0


# --- Audit log ------------------------------------------------------------------------------------------------


@org_action_required("org:audit")
def audit(request: HttpRequest) -> HttpResponse:
    """Every change made in the org, newest first, filtered by action (the ones its trail holds)."""
    access = _access(request)
    present = selectors.audit_actions(access.org)
    listing = filtered_page(request, selectors.audit_events(access.org), param="action", choices=present)
    events = list(listing.page.object_list)
    keys = selectors.api_keys_of_events(access.org, events)
    context = {
        "org": access.org,
        "listing": listing,
        "actions": [(action, action) for action in present],
        "rows": [_audit_row(event, keys) for event in events],
    }
    return render_console(request, "orgs/audit.html", context, partial="audit_table")


# A target's kind is its model's name, lowercased by apps.core.audit.record; the ones that do not read as words.
_TARGET_LABELS = {"apikey": "API key"}


def _audit_row(event: AuditEvent, keys: dict[int, APIKey]) -> dict[str, Any]:
    target_key = None
    if event.target_type == "apikey" and event.target_id.isascii() and event.target_id.isdigit():
        target_key = keys.get(int(event.target_id))
    target_url = ""
    if target_key is not None:
        target_url = f"{reverse('orgs:keys')}#key-{target_key.pk}"
    elif event.target_type == "task" and event.target_id:
        target_url = reverse("tasks:detail", args=[event.target_id])
    return {
        "event": event,
        "api_key": keys.get(event.api_key_id) if event.api_key_id is not None else None,
        "target_label": _TARGET_LABELS.get(event.target_type, event.target_type),
        "target_key": target_key,
        "target_url": target_url,
        "details": json.dumps(event.details, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
        if event.details
        else "",
    }
