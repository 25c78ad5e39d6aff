from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core import context
from apps.core.metrics import ORG_API_REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
request_log = logging.getLogger("hermes.request")
# Probes and scrapes arrive every few seconds: their lines go to a sampled logger (apps.core.logging).
probe_log = logging.getLogger("hermes.probes")
PROBE_PATHS = ("/api/v1/health", "/metrics")


class RequestContextMiddleware:
    """Binds request_id (from X-Request-ID or new) for logs, echoes it on the response, and logs one line per
    request with the context authentication bound (org_id, user_id) and the outcome."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else context.new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        context.clear()
        context.bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        self._account(request, response, time.perf_counter() - started)
        return response

    def process_view(self, request: HttpRequest, *args: object) -> None:
        # A signed-in person (session) is known once AuthenticationMiddleware ran; API keys bind in DRF auth.
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            context.bind(user_id=user.pk)

    def _account(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        org_id = context.get_context().get("org_id")
        if org_id is not None:
            ORG_API_REQUESTS.labels(org_id=str(org_id), status_class=f"{response.status_code // 100}xx").inc()
        logger = probe_log if request.path.startswith(PROBE_PATHS) else request_log
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
