from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core import context

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContextMiddleware:
    """Binds request_id (from X-Request-ID or new) for logs and echoes it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else context.new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        context.clear()
        context.bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response
