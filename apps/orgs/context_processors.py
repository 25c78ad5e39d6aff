"""Template context for every console page: who is acting for which org, and the orgs to switch to."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from apps.orgs.selectors import memberships_of, session_access


def console(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    memberships = memberships_of(user)
    # org_action_required already resolved the access for guarded views; other pages (errors, org creation)
    # resolve it here so the header still shows the current org.
    access = getattr(request, "access", None) or (session_access(request, user) if memberships else None)
    return {
        "console_access": access,
        "console_memberships": memberships,
        "console_nav": _nav(request) if access else [],
    }


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
