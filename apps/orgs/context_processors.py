"""Template context for every console page: who is acting for which org, and the orgs to switch to."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

from apps.core.permissions import ACTIONS, Role
from apps.orgs.selectors import memberships_of, session_access

# Where switching org may land: a section's own page, the same in every org. Never a page about one object (a
# task, an agent, a message): that object belongs to the org switched away from. Not listed: the dashboard.
SECTION_PAGES = frozenset(
    {
        *("agents:list", "agents:marketplace", "agents:register", "tasks:list", "tasks:create"),
        *("federation:peers", "federation:contacts", "federation:policies", "federation:outbox"),
        *("federation:remote-tasks", "federation:inbox", "federation:dlq", "federation:audit"),
        *("orgs:members", "orgs:keys", "orgs:usage", "orgs:settings", "orgs:audit"),
    }
)


def is_section_page(url: str) -> bool:
    try:
        return resolve(urlsplit(url).path).view_name in SECTION_PAGES
    except Resolver404:
        return False


def console(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    memberships = memberships_of(user)
    # org_action_required already resolved the access for guarded views; other pages (errors, org creation)
    # resolve it here so the header still shows the current org.
    access = getattr(request, "access", None) or (session_access(request, user) if memberships else None)
    match = getattr(request, "resolver_match", None)
    on_section_page = request.method == "GET" and match is not None and match.view_name in SECTION_PAGES
    return {
        "console_access": access,
        "console_role_label": _role_label(access.role) if access else "",
        # What the person may do here, from the one matrix, for links that only some roles may follow
        # (`{% if "org:audit" in console_allowed %}`).
        "console_allowed": frozenset(action for action in ACTIONS if access.allows(action)) if access else frozenset(),
        "console_memberships": memberships,
        "console_nav": _nav(request) if access else [],
        # The switcher's `next`: the same section in the org chosen (without the query: a filter may name an
        # agent of this org).
        "console_switch_next": request.path if on_section_page else "",
    }


def _role_label(role: str) -> str:
    return str(Role(role).label) if role in Role.values else role


# (label, url name, view-name prefix that marks the entry current; the longest matching prefix wins).
NAV = (
    ("Dashboard", "orgs:dashboard", "orgs:dashboard"),
    ("Agents", "agents:list", "agents:"),
    ("Marketplace", "agents:marketplace", "agents:marketplace"),
    ("Tasks", "tasks:list", "tasks:"),
    ("Federation", "federation:peers", "federation:"),
    ("Organization", "orgs:members", "orgs:"),
)


def _nav(request: HttpRequest) -> list[dict[str, Any]]:
    match = getattr(request, "resolver_match", None)
    view_name = match.view_name if match else ""
    matching = [prefix for _, _, prefix in NAV if view_name.startswith(prefix)]
    current = max(matching, key=len) if matching else None
    items = []
    for label, name, prefix in NAV:
        try:
            url = reverse(name)
        except NoReverseMatch:  # an app whose console pages are not mounted yet has no entry
            continue
        items.append({"label": label, "url": url, "current": prefix == current})
    return items
