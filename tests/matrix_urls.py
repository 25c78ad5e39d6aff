"""The real URLs plus one probe endpoint per matrix action that has no real endpoint on this branch yet.

A probe is an OrgScopedViewSet guarded by exactly that action, so the role-matrix test drives the real
authentication (session and API key), OrgActionPermission and quota stack. When your app ships a real endpoint
for the action, point the action's probe in tests/test_role_matrix.py at it and delete the probe route here.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrgScopedMixin
from hermes_site.urls import urlpatterns as real_urlpatterns

PROBED_ACTIONS = ("agents:read", "agents:write", "tasks:read", "tasks:write", "federation:read", "federation:write")


class ProbeViewSet(OrgScopedMixin, viewsets.ViewSet):  # type: ignore[misc]
    matrix_action = ""

    def required_action(self, request: Request) -> str | None:
        return self.matrix_action

    def list(self, request: Request) -> Response:
        return Response({"ok": True, "org": self.org.slug})


urlpatterns: list[Any] = [
    *real_urlpatterns,
    *[
        path(
            f"probe/{action}",
            type(f"Probe_{action}", (ProbeViewSet,), {"matrix_action": action}).as_view({"get": "list"}),
        )
        for action in PROBED_ACTIONS
    ],
]
