from __future__ import annotations

from typing import Any

from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request

from apps.orgs.selectors import session_access


class SessionOrgAuthentication(SessionAuthentication):
    """The console's session, acting for the person's current org (Access on request.auth)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        return user, session_access(request._request, user)
