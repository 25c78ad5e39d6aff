"""OpenAPI generation: every operation's description starts with its auth line (scope and roles).

`describe(...)` (apps.core.api) writes it explicitly; for `OrgScopedViewSet` operations without it, this schema
class derives it from the same `required_actions`/`read_action`/`write_action` the permission check uses, so the
documentation cannot drift from the enforcement.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions

from apps.core.api import OrgScopedMixin, auth_line


class HermesAutoSchema(AutoSchema):
    def get_description(self) -> str:  # type: ignore[override]
        description = super().get_description() or ""
        if "**Auth:**" in description or not isinstance(self.view, OrgScopedMixin):
            return description
        view = self.view
        name = getattr(view, "action", None) or self.method.lower()
        if name in view.required_actions:
            action = view.required_actions[name]
        else:
            action = view.read_action if self.method in permissions.SAFE_METHODS else view.write_action
        return f"{auth_line(action)}\n\n{description}".strip()
