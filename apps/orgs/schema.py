"""drf-spectacular: describe the API-key authentication in the OpenAPI schema (imported by OrgsConfig.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.orgs.auth.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "hrm_…",
            "description": (
                "An org API key: `Authorization: Bearer hrm_…`. It acts for the key's org with its creator's "
                "current role, narrowed to the key's scopes. Each operation names the scope it needs."
            ),
        }


class SessionOrgScheme(OpenApiAuthenticationExtension):
    target_class = "apps.orgs.auth.SessionOrgAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": (
                "The console's session (with the CSRF token on unsafe methods). It acts for the person's current "
                "org, or the org named by the `X-Hermes-Org: <slug>` header, with their role there."
            ),
        }
