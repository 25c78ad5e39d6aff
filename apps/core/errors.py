"""One error shape for every API error: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from apps.core.http import header_text


class HermesAPIError(exceptions.APIException):
    """Raise from any API code path with a stable machine-readable code."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status_code: int = 400,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        after_rollback: Callable[[], object] | None = None,
    ):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.details = details or {}
        self.headers = headers or {}  # e.g. Retry-After and X-RateLimit-* on a 429
        self._after_rollback = after_rollback

    def run_after_rollback(self) -> None:
        """Write what must outlive the transaction this error rolls back (the audit row of a refusal). Called,
        once, by whoever catches the error outside every transaction: the API's exception handler and the
        console views that catch it."""
        work, self._after_rollback = self._after_rollback, None
        if work is not None:
            work()


def refusal(error: HermesAPIError, record: Callable[[], object]) -> HermesAPIError:
    """`error`, with `record` (an audit write) run now when no transaction is open. Inside one, it runs once:
    when the transaction commits all the same (the caller caught the error and went on), or, when it rolls back,
    from `run_after_rollback` by whoever catches the error outside it."""
    if transaction.get_connection().in_atomic_block:
        error._after_rollback = record
        transaction.on_commit(error.run_after_rollback)
    else:
        record()
    return error


class Conflict(HermesAPIError):
    def __init__(self, message: str, *, code: str = "conflict", details: dict[str, Any] | None = None):
        super().__init__(message, code=code, status_code=status.HTTP_409_CONFLICT, details=details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _unaccepted_credentials(request: Any) -> str | None:
    """Why the Authorization header a client did send authenticated nobody, or None without one.

    The authentication classes skip a header they do not own (a proxy's Basic credentials must not break the
    session behind it), so without this a client sending the wrong kind of credential heard "not provided"."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if not scheme:
        return None
    if scheme.lower() == "bearer" and value.strip():
        return "The Bearer token is not a Hermes API key (they start with 'hrm_'); create one at /org/keys/."
    if scheme.startswith("hrm_") or scheme.lower() == "hrm":
        # The key itself, without its scheme: quoting it back would put part of a secret in the response.
        return "The API key must follow the scheme: send it as 'Authorization: Bearer hrm_…'."
    return (
        f"The Authorization scheme '{scheme[:20]}' is not accepted: send an API key as 'Authorization: Bearer hrm_…'."
    )


def answered_media_types(renderers: Any) -> str:
    return " or ".join(dict.fromkeys(renderer.media_type for renderer in renderers or ()))


def _unacceptable(request: Any, renderers: Any) -> str:
    # DRF says only "Could not satisfy the request Accept header."; say what was asked and what would do.
    asked = (header_text(request.META.get("HTTP_ACCEPT")) or "")[:100]
    return f"The Accept header asks for '{asked}'; this endpoint answers {answered_media_types(renderers)}."


def request_refusal(exc: SuspiciousOperation) -> HermesAPIError | None:
    """The request-size limits Django enforces while reading a request (first touched by DRF's content
    negotiation): their own code and message, not a plain-HTML 400 or, under DEBUG, a slow technical page."""
    if isinstance(exc, TooManyFieldsSent):
        return HermesAPIError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query or form parameters.",
            code="too_many_parameters",
        )
    if isinstance(exc, RequestDataTooBig):
        return HermesAPIError(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            code="request_too_large",
            status_code=413,
        )
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Imported here: rest_framework.views imports the authentication classes, which import this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, SuspiciousOperation):
        exc = request_refusal(exc) or exc
    if isinstance(exc, DjangoValidationError):
        # Actions validate with Django's ValidationError (the console shows the same messages): per-field 400.
        exc = exceptions.ValidationError(detail=as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, exceptions.NotAcceptable) and context.get("request") is not None:
        exc = exceptions.NotAcceptable(_unacceptable(context["request"], exc.available_renderers))
    elif isinstance(exc, exceptions.NotAuthenticated) and context.get("request") is not None:
        explained = exceptions.NotAuthenticated(_unaccepted_credentials(context["request"]) or exc.detail)
        explained.auth_header = getattr(exc, "auth_header", None)  # type: ignore[attr-defined]  # the challenge
        exc = explained
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, HermesAPIError):
        exc.run_after_rollback()
        body = error_body(exc.error_code, str(exc.detail), exc.details)
        for name, value in exc.headers.items():
            response[name] = value
    elif isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
        body = error_body("invalid", "The request has invalid fields; see details.", details)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        body = error_body(str(code), str(exc.detail))
    else:  # pragma: no cover - DRF only handles APIException subclasses
        body = error_body("error", str(exc))
    response.data = body
    return response


def json_error(request: HttpRequest, code: str, message: str, status_code: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


def _is_api(request: HttpRequest) -> bool:
    # The API (and anything a program calls) keeps the JSON error shape; console pages get HTML.
    return request.path.startswith("/api/")


def _html_error(request: HttpRequest | None, status_code: int, title: str, message: str) -> HttpResponse:
    from apps.core.console import ERROR_MESSAGE_HEADER, error_message_header

    context = {"status": status_code, "title": title, "message": message}
    try:
        # With the request (nav, current org) when the page can afford it; a 500 renders without context
        # processors because they may be what failed.
        body = render_to_string("error.html", context, request=request)
    except Exception:
        body = render_to_string("error.html", {**context, "minimal": True})
    response = HttpResponse(body, status=status_code)
    response[ERROR_MESSAGE_HEADER] = error_message_header(message)
    return response


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    refusal = request_refusal(exception) if isinstance(exception, SuspiciousOperation) else None
    message = str(refusal.detail) if refusal else "The request could not be read."
    status_code = int(refusal.status_code) if refusal else 400
    if _is_api(request):
        return json_error(request, refusal.error_code if refusal else "bad_request", message, status_code)
    return _html_error(request, status_code, "Bad request", message)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    message = str(exception) if exception and str(exception) else "You do not have permission to do that."
    if _is_api(request):
        return json_error(request, "permission_denied", message, 403)
    return _html_error(request, 403, "Not allowed", message)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: Django's own page is unstyled and says "more information is available with DEBUG=True";
    the usual cause for a person is a page left open across a sign-in or sign-out in another tab."""
    from django.middleware.csrf import REASON_NO_CSRF_COOKIE

    if reason == REASON_NO_CSRF_COOKIE:
        message = "Your browser did not send this site's security cookie: allow cookies for it, then reload the page."
    else:
        # A plain form's answer is a page of its own: reloading it would post the stale form again.
        again = "reload it and try again" if getattr(request, "htmx", None) else "go back, reload it and send it again"
        message = (
            "This page is out of date (you signed in or out in another tab, or it was open for a long time): "
            f"{again}. Nothing was changed."
        )
    if _is_api(request):
        return json_error(request, "csrf_failed", message, 403)
    return _html_error(request, 403, "Page out of date", message)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return json_error(request, "not_found", "Not found.", 404)
    return _html_error(request, 404, "Page not found", "There is nothing here, or it belongs to another organization.")


DATABASE_RETRY_AFTER_S = 5


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 for a request that failed because the database cannot be reached: nothing was read or written."""
    message = (
        "The database is unreachable, so nothing was read or changed; "
        f"retry in a few seconds (Retry-After: {DATABASE_RETRY_AFTER_S})."
    )
    if _is_api(request):
        response: HttpResponse = json_error(request, "database_unavailable", message, 503)
    else:
        response = _html_error(None, 503, "Temporarily unavailable", message)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


def handler500(request: HttpRequest) -> HttpResponse:
    message = "Internal server error; the request id identifies it in the logs."
    if _is_api(request):
        return json_error(request, "server_error", message, 500)
    request_id = getattr(request, "request_id", "")
    return _html_error(None, 500, "Something went wrong", f"{message} Request id: {request_id}".strip())


def whole_number(raw: str | None, name: str, *, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer query parameter (or header) of the API: `default` when absent or empty, at most `maximum`
    (a larger value is clamped, as documented), and a 400 naming the parameter when it is no whole number or is
    below `minimum` — DRF would otherwise ignore such a value, or `int()` would raise a 500."""
    if raw is None or raw == "":
        return default
    digits = raw.isascii() and raw.isdigit()
    # Past 18 digits a value is larger than any count or sequence number Hermes keeps (a bigint holds 19), so it
    # reads as the largest: int() of a string of 4,301 digits or more raises ValueError, which was a 500.
    value = (int(raw) if len(raw) <= 18 else 10**18) if digits else None
    if value is None or value < minimum:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise HermesAPIError(
            f"'{name}' must be a whole number {bound}.", code="invalid", details={name: [f"A whole number {bound}."]}
        )
    return value if maximum is None else min(value, maximum)


def one_of(raw: str | None, name: str, choices: list[str]) -> str | None:
    """A filter query parameter that must be one of `choices` (None when absent): an unknown value is a 400
    naming the choices — a filter that matches nothing would read as "there are none"."""
    if not raw:
        return None
    if raw not in choices:
        raise HermesAPIError(
            f"'{name}' must be one of: {', '.join(choices)}.",
            code="invalid",
            details={name: [f"One of: {', '.join(choices)}."]},
        )
    return raw
