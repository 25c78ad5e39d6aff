"""A creating endpoint for the idempotency tests (mounted with @pytest.mark.urls): one audit row per create,
optionally slow (`?delay=`) so that concurrent duplicates overlap, optionally failing (`{"fail": true}`)."""

from __future__ import annotations

import time
from typing import Any

from django.urls import path
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrgScopedMixin
from apps.core.audit import record
from apps.core.idempotency import IdempotentCreateMixin


class _ProbeCreate:
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if request.data.get("fail"):
            return Response({"error": "asked to fail"}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        time.sleep(float(request.query_params.get("delay", 0)))
        event = record("probe.created", access=self.access, note=str(request.data.get("note", "")))  # type: ignore[attr-defined]
        return Response({"id": event.pk, "note": event.details["note"]}, status=status.HTTP_201_CREATED)


class ProbeViewSet(IdempotentCreateMixin, _ProbeCreate, OrgScopedMixin, viewsets.ViewSet):  # type: ignore[misc]
    write_action = "tasks:write"


urlpatterns = [path("api/v1/probes", ProbeViewSet.as_view({"post": "create"}), name="probe-create")]
