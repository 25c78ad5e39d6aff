"""The console's guard: the same `Access.allows(action)` check the API's OrgActionPermission makes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.orgs.selectors import session_access

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
            if access is None:
                return redirect("orgs:create")
            if action is not None and not access.allows(action):
                raise PermissionDenied(f"Your role '{access.role}' may not perform '{action}'.")
            request.access = access  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
