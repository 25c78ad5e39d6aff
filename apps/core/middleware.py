from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.core.exceptions import TooManyFieldsSent
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, QueryDict

from apps.core import checks, context
from apps.core.errors import handler400
from apps.core.metrics import ORG_API_REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
logger = logging.getLogger(__name__)
request_log = logging.getLogger("hermes.request")
# Probes and scrapes arrive every few seconds: their lines go to a sampled logger (apps.core.logging).
probe_log = logging.getLogger("hermes.probes")
PROBE_PATHS = ("/api/v1/health", "/metrics")


def _refuse_an_oversized_query(request: HttpRequest) -> HttpResponse | None:
    """More query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS: the clear 400 (JSON for the API, a page for the
    console), before anything reads the query. Left to Django, every reader raised again, and with DEBUG on the
    technical error page did too, for seconds: a plain-text 500 on console pages."""
    try:
        request.GET  # noqa: B018 - parsing is the check
    except TooManyFieldsSent as exc:
        request.GET = QueryDict()  # readers after this (the error page, the log line) see an empty query
        return handler400(request, exc)
    return None


def _refuse_a_chunked_body(request: HttpRequest) -> HttpResponse | None:
    """A body sent chunked, without Content-Length: Django reads a WSGI/ASGI body by its Content-Length, so it was
    silently read as empty (a POST /tasks said its fields were missing; a cancel with a body was 202). A clear 411
    instead, before anything reads it."""
    if request.method in ("GET", "HEAD", "OPTIONS") or "CONTENT_LENGTH" in request.META:
        return None
    if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    from apps.core.errors import _html_error, _is_api, json_error

    message = "Send the request body with a Content-Length header: chunked request bodies are not read."
    if _is_api(request):
        return json_error(request, "length_required", message, 411)
    return _html_error(request, 411, "Length required", message)


def _refuse_a_nul_in_the_url(request: HttpRequest) -> HttpResponse | None:
    """A NUL character (`%00`) in the path or the query: no slug, id, name or filter value can hold one, and
    PostgreSQL refuses it in any text it is compared with (DataError), so a search or a lookup by slug holding
    one was a 500. One clear 400 for every URL instead of a check in every filter."""
    if "\x00" not in request.path and "%00" not in request.META.get("QUERY_STRING", ""):
        return None
    from apps.core.errors import _html_error, _is_api, json_error

    message = "The URL contains a NUL character (%00), which no name, id or filter value can hold."
    if _is_api(request):
        return json_error(request, "invalid", message, 400)
    return _html_error(request, 400, "Bad request", message)


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
        response = (
            _refuse_an_oversized_query(request)
            or _refuse_a_nul_in_the_url(request)
            or _refuse_a_chunked_body(request)
            or self.get_response(request)
        )
        response[REQUEST_ID_HEADER] = request_id
        self._account(request, response, time.perf_counter() - started)
        return response

    def process_view(self, request: HttpRequest, *args: object) -> None:
        # A signed-in person (session) is known once AuthenticationMiddleware ran; API keys bind in DRF auth.
        try:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                context.bind(user_id=user.pk)
        except DatabaseError:
            # The session could not be read. Raised here it would skip every process_exception (a 500 for an
            # outage); the view reads the user again and DatabaseUnavailableMiddleware answers that.
            pass

    def _account(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        org_id = context.get_context().get("org_id")
        if org_id is not None:
            ORG_API_REQUESTS.labels(org_id=str(org_id), status_class=f"{response.status_code // 100}xx").inc()
        probe = request.path.startswith(PROBE_PATHS)
        logger = probe_log if probe else request_log
        level = _log_level(response)
        if probe and level == logging.ERROR and response.status_code == 503:
            # A not-ready answer is the probe doing its job, every few seconds while it lasts: the readiness body
            # and the health checks name the cause; an ERROR line per probe only floods the logs.
            level = logging.WARNING
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


def _log_level(response: HttpResponse) -> int:
    """ERROR for a server error; WARNING for a 503 that says when to come back (a disabled federation link, the
    database outage the middleware below answers): a refusal the server chose, not a fault to page anyone about
    per request; INFO otherwise."""
    if response.status_code == 503 and response.has_header("Retry-After"):
        return logging.WARNING
    return logging.ERROR if response.status_code >= 500 else logging.INFO


class DatabaseUnavailableMiddleware:
    """A request that failed because the database is down answers 503 `database_unavailable` (JSON for the API,
    the error page for the console) instead of a 500 with a traceback per request during an outage.

    OperationalError also means a deadlock, a statement timeout or a locked SQLite file — real errors of a
    reachable database. Those stay 500s: the answer is a 503 only when a fresh connection cannot be opened either."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from apps.core.errors import database_unavailable

        if not checks.is_database_outage(exception):
            return None
        logger.warning("database unreachable (%s): %s %s answered 503", exception, request.method, request.path)
        return database_unavailable(request)
