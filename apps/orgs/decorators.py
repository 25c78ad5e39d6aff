"""The console's guard: the same `Access.allows(action)` check the API's OrgActionPermission makes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.core.console import is_fragment_request, shows_one_object
from apps.core.errors import Conflict
from apps.core.permissions import role_refusal
from apps.orgs.selectors import SESSION_ORG_KEY, memberships_of, other_org_holding, session_access

View = Callable[..., HttpResponse]


def org_action_required(action: str | None = None) -> Callable[[View], View]:
    """Resolve `request.access` for the signed-in person's current org and require `action` (if given).

    No org yet sends the person to create one; a role without the action is a 403.
    """

    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            access = session_access(request, request.user)
            _say_if_the_org_was_lost(request, access)
            if access is None:
                return redirect("orgs:create")
            _refuse_if_page_showed_another_org(request, access.org)
            if action is not None and not access.allows(action):
                raise PermissionDenied(role_refusal(access.role, action))
            request.access = access  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        # Read by `required_action` (the org switcher asks it of the page it would land on). functools.wraps copies
        # it onto any decorator stacked above (require_POST, …).
        wrapper.org_action = action  # type: ignore[attr-defined]
        return wrapper

    return decorator


def required_action(view: Callable[..., Any]) -> str | None:
    """The action `org_action_required` guards `view` with: None when it asks none (or is not guarded)."""
    action = getattr(view, "org_action", None)
    return action if isinstance(action, str) else None


# Which org the page that posted was showing: htmx sends the header (templates/base.html), plain forms the field
# (static/js/hermes.js). Absent (a script, no JavaScript) means no claim, and the session's org applies.
CONSOLE_ORG_HEADER = "X-Hermes-Console-Org"
CONSOLE_ORG_FIELD = "console_org"


def _say_if_the_org_was_lost(request: HttpRequest, access: Any) -> None:
    """The org the session was working in is no longer one of the person's (they were removed, or it was
    deleted): say so once, instead of silently showing another org or the create-an-org page."""
    held = request.session.get(SESSION_ORG_KEY)
    if held is None and access is not None:
        request.session[SESSION_ORG_KEY] = access.org.pk  # the first org, remembered so its loss can be told
        return
    if held is None or "X-Hermes-Org" in request.headers or (access is not None and access.org.pk == held):
        return
    if access is None:
        request.session.pop(SESSION_ORG_KEY, None)
    else:
        request.session[SESSION_ORG_KEY] = access.org.pk
    now = f" You are now working in {access.org.name}." if access else ""
    messages.warning(
        request,
        f"You no longer have access to the organization you were working in: you were removed from it, or it "
        f"was deleted.{now}",
    )


def _refuse_if_page_showed_another_org(request: HttpRequest, org: Any) -> None:
    """A post from a page rendered for another org (the person switched org in another tab since) acts on
    nothing: the session's org is not the one the person was looking at.

    A fragment such a page reads with htmx (a filter, the task list's live refresh, a poll) is refused the same
    way: it went into a page whose header still named the old org, and listed the new org's tasks under it. A whole
    page (not htmx, or a boosted navigation) is read for the session's org as always: its header says which."""
    reading = request.method in ("GET", "HEAD", "OPTIONS")
    if reading and not is_fragment_request(request):
        return
    shown = request.headers.get(CONSOLE_ORG_HEADER) or (None if reading else request.POST.get(CONSOLE_ORG_FIELD))
    if not shown or shown == org.slug:
        return
    held = next((m.organization for m in memberships_of(request.user) if m.organization.slug == shown), None)
    page = request.headers.get("HX-Current-URL") or request.headers.get("Referer") or ""
    if held is not None and shows_one_object(page):
        # The page of one of that org's objects (a task, an agent): loading it again switches the session back to
        # its org (switch_to_the_org_holding), in every tab, so "reload to work in the other org" was wrong.
        why = (
            f"this page belongs to {held.name}, but you have switched to {org.name} since (in another tab). To act "
            f"here, switch back to {held.name} (reloading this page does that, for every tab)."
        )
    elif held is not None:
        # By name, as the header and the switcher show orgs (the slug is what the page sent).
        why = (
            f"this page was showing {held.name}, but you have switched to {org.name} since (in another tab). "
            f"Reload the page to work in {org.name}, or switch back."
        )
    else:
        why = f"you no longer have access to the organization '{shown}' this page was showing."
    outcome = "This part of the page was not updated" if reading else "Nothing was done"
    raise Conflict(f"{outcome}: {why}", code="org_switched")


def switch_to_the_org_holding(request: HttpRequest, holds: Callable[[Any], bool]) -> HttpResponse | None:
    """For a console page whose object is not in the current org: if another org of the person's holds it (a
    link from an email, a colleague or another tab), switch the console to that org and load the page again —
    it was a bare 404. None when no org of theirs holds it: the 404 then tells nothing about other orgs.

    Only for GET pages: an action posted to the wrong org must fail, not switch and act.
    """
    holder = other_org_holding(request.user, request.access.org.pk, holds)  # type: ignore[attr-defined]
    if holder is None:
        return None
    request.session[SESSION_ORG_KEY] = holder.pk
    messages.info(request, f"Switched to {holder.name}, which this page belongs to.")
    return redirect(request.get_full_path())
