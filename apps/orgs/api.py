"""The org API: organizations, members, invitations, API keys and usage (all under /api/v1/)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import OrgScopedMixin, OrgScopedViewSet, describe
from apps.core.errors import HermesAPIError
from apps.orgs import actions, quotas
from apps.orgs.models import APIKey
from apps.orgs.serializers import (
    APIKeyCreateSerializer,
    APIKeyRotateSerializer,
    APIKeySerializer,
    IssuedAPIKeySerializer,
)

_KEYS_NOTE = (
    "Admins and owners (or a key with `org:admin`) manage every key of the org; developers manage the keys they "
    "created (`keys:own`, session only). Another person's key is a 404 for a developer."
)


class APIKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):  # type: ignore[misc]
    model = APIKey
    serializer_class = APIKeySerializer

    def required_action(self, request: Request) -> str | None:
        return actions.key_manage_action(self.access)

    def scoped_queryset(self) -> QuerySet[Any]:
        queryset = super().scoped_queryset().select_related("created_by")
        if not self.access.allows("org:admin"):
            queryset = queryset.filter(created_by=self.access.user)
        return queryset

    @describe("List API keys", action="org:admin", notes=_KEYS_NOTE)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @describe("Read an API key", action="org:admin", notes=_KEYS_NOTE)
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @describe(
        "Create an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " The plaintext `key` is in this response only. Scopes cannot exceed the creator's role "
        "(nor the scopes of the key making the request).",
        request=APIKeyCreateSerializer,
        responses={201: IssuedAPIKeySerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = APIKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = actions.create_api_key(access=self.access, **serializer.validated_data)
        body = IssuedAPIKeySerializer(issued.key, context={"plaintext": issued.plaintext}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @describe(
        "Rotate an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " Issues a successor (plaintext in this response only) and keeps the old key working "
        "for `grace_seconds`, after which it answers 401 `key_expired`.",
        request=APIKeyRotateSerializer,
        responses={201: IssuedAPIKeySerializer},
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        serializer = APIKeyRotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = actions.rotate_api_key(
            access=self.access,
            key=key,
            grace=timedelta(seconds=serializer.validated_data["grace_seconds"]),
            scopes=serializer.validated_data.get("scopes"),
        )
        body = IssuedAPIKeySerializer(issued.key, context={"plaintext": issued.plaintext}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @describe(
        "Revoke an API key",
        action="org:admin",
        notes=_KEYS_NOTE + " Immediate: the next request with the key is a 401 `key_revoked`.",
        request=None,
        responses={200: APIKeySerializer},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = actions.revoke_api_key(access=self.access, key=self.get_object())
        return Response(APIKeySerializer(key).data)


class UsageView(OrgScopedMixin, APIView):  # type: ignore[misc]
    read_action = "org:read"

    @describe(
        "Usage and limits of the current org",
        action="org:read",
        notes="The plan's limits, requests in the current minute, and accepted API calls and tasks per UTC day "
        "(today first, `days` days, at most 35). `available` is false when the counters cannot be read (Redis down).",
        parameters=[OpenApiParameter("days", int, description="How many days (1-35, default 7).")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        try:
            days = min(35, max(1, int(request.query_params.get("days", 7))))
        except ValueError:
            raise HermesAPIError(
                "days must be an integer", code="invalid", details={"days": ["A whole number from 1 to 35."]}
            ) from None
        return Response(quotas.usage(self.org, days=days))
