"""DRF base classes: the one way an API view reaches org-owned data."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, viewsets
from rest_framework.request import Request

from apps.core import context
from apps.core.errors import HermesAPIError
from apps.core.permissions import Access


def access_of(request: Request) -> Access:
    access = getattr(request, "auth", None)
    if not isinstance(access, Access):
        raise HermesAPIError(
            "No organization selected: use an API key, or pick an organization in the console first.",
            code="no_organization",
            status_code=403,
        )
    return access


class OrgActionPermission(permissions.BasePermission):
    """Checks `view.required_actions[view.action]` (or per HTTP method) against the role matrix and key scopes."""

    message = "Permission denied."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        action = view.required_action(request)
        if action is None:
            return True
        access = access_of(request)
        if access.allows(action):
            return True
        if access.scopes is not None and action not in access.scopes:
            raise HermesAPIError(
                f"This API key lacks the scope '{action}'.",
                code="missing_scope",
                status_code=403,
                details={"required_scope": action},
            )
        raise HermesAPIError(
            f"Your role '{access.role}' may not perform '{action}'.",
            code="role_forbidden",
            status_code=403,
            details={"required_action": action, "role": access.role},
        )


class OrgScopedMixin:
    """Owns get_queryset: subclasses name `model` and may only narrow `scoped_queryset()`.

    `required_actions` maps a viewset action (or an HTTP method) to a matrix action; safe methods default to
    `read_action` and unsafe ones to `write_action`.
    """

    model: Any = None
    read_action: str | None = None
    write_action: str | None = None
    required_actions: dict[str, str] = {}
    permission_classes = [permissions.IsAuthenticated, OrgActionPermission]
    request: Request

    def perform_authentication(self, request: Request) -> None:
        super().perform_authentication(request)  # type: ignore[misc]
        # From here on every log line (and every Celery job enqueued) carries the org and user.
        context.bind_access(getattr(request, "auth", None))

    def required_action(self, request: Request) -> str | None:
        name = getattr(self, "action", None) or (request.method or "get").lower()
        if name in self.required_actions:
            return self.required_actions[name]
        return self.read_action if request.method in permissions.SAFE_METHODS else self.write_action

    @property
    def access(self) -> Access:
        return access_of(self.request)

    @property
    def org(self) -> Any:
        return self.access.org

    def scoped_queryset(self) -> QuerySet[Any]:
        return self.model.objects.for_org(self.org)

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()


class OrgScopedViewSet(OrgScopedMixin, viewsets.GenericViewSet):  # type: ignore[misc]
    lookup_value_regex = "[^/]+"
