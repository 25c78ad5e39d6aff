"""Account API: who am I, registration, password change and reset (the console uses the same actions)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.serializers import MeSerializer
from apps.core.api import describe
from apps.orgs.selectors import memberships_of


class MeView(APIView):
    @describe(
        "The caller",
        action=None,
        notes="The signed-in person (or the creator of the API key), their orgs and roles, and the org, role and "
        "scopes this request acts with.",
        responses={200: MeSerializer},
    )
    def get(self, request: Request) -> Response:
        user: Any = request.user
        data = {
            "id": user.pk,
            "email": user.email,
            "name": user.name,
            "date_joined": user.date_joined,
            "memberships": memberships_of(user),
        }
        return Response(MeSerializer(data, context={"access": request.auth}).data)
