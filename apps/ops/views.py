from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def health_live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; no dependency is touched (so a DB/Redis outage never restarts us)."""
    return JsonResponse({"status": "ok"})
