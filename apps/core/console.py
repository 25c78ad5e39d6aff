"""Console (HTML + HTMX) rendering shared by every app's views.py.

One template per page; the fragments HTMX swaps are `{% partialdef %}` blocks inside it, so the full page and the
swap render the same markup. `render_console` picks the fragment when htmx asks for it (and not for a boosted
navigation, which wants the whole page) and marks the response `Vary: HX-Request` so caches keep both answers apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme

# Header the console's htmx error handler shows as a toast (error_message_header says how it is written).
ERROR_MESSAGE_HEADER = "X-Hermes-Error"
# What error_message_header sends as it is: printable ASCII but "%", which starts an escape.
_HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
# The flash message's tag saying a plain form post was refused and did nothing (templates/includes/messages.html).
REFUSED_POST_TAG = "refused-post"


def is_fragment_request(request: HttpRequest) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted  # type: ignore[union-attr]


def render_console(
    request: HttpRequest,
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    partial: str | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render `template_name`, or only its `partial` for an HTMX (non-boosted) request.

    A fragment that answers an action (a POST) also replaces the page's flash messages, out of band: with those
    that action queued, or with none, so that a refused form (422) no longer sits under the success message of the
    previous one ("Invitation sent to …" above "already a member"). A fragment read with GET (a live refresh, a
    poll, a filter) leaves them alone, pending for the next page: the session is shared by every tab, and the task
    list's live refresh in one tab showed, and used up, "Task sent to …" that another tab had just queued for its
    next page (and clearing the region there would wipe the message the page was loaded with).
    """
    fragment = partial is not None and is_fragment_request(request)
    name = f"{template_name}#{partial}" if fragment else template_name
    response = render(request, name, context or {}, status=status)
    if fragment and request.method not in ("GET", "HEAD"):
        oob = render_to_string("includes/messages.html", {"oob": True}, request=request)
        response.content = response.content + oob.encode()
    patch_vary_headers(response, ("HX-Request",))
    return response


# Rows per page of a console log (the audit pages).
LOG_PAGE_SIZE = 50


@dataclass(frozen=True)
class FilteredPage:
    """One numbered page of a log narrowed by one filter (`templates/includes/filter_select.html` and
    `includes/pager.html` render the two halves). `query` is the filter as a query string, which the pager's
    links keep; `chosen` is "" when no (or no known) value was asked for."""

    page: Page
    chosen: str
    query: str


def filtered_page(
    request: HttpRequest,
    rows: QuerySet[Any],
    *,
    param: str,
    choices: Collection[str],
    field: str | None = None,
    per_page: int = LOG_PAGE_SIZE,
) -> FilteredPage:
    """`rows` narrowed to `?<param>=` when it is one of `choices` (matched on `field`, default `param`), then the
    page `?page=` asks for (the last one past the end). A value the select does not offer is ignored, so the
    list shown is always the one the select says."""
    chosen = request.GET.get(param, "")
    if chosen not in choices:
        chosen = ""
    if chosen:
        rows = rows.filter(**{field or param: chosen})
    page = Paginator(rows, per_page).get_page(request.GET.get("page"))
    return FilteredPage(page=page, chosen=chosen, query=urlencode({param: chosen}) if chosen else "")


def hx_redirect(request: HttpRequest, url: str) -> HttpResponse:
    """Send the browser to `url`: HX-Redirect for htmx (a 302 would be followed inside the swap), 302 otherwise."""
    if getattr(request, "htmx", None):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def error_message_header(message: str) -> str:
    """The header value for ERROR_MESSAGE_HEADER: one line, bounded, with everything but printable ASCII (and "%")
    percent-encoded as UTF-8, which static/js/hermes.js decodes. A header value is latin-1: encoded to it, an org
    named "Beta 東京 Labs" or a "…" showed as "?" in the toast. Plain ASCII reads as it was."""
    line = " ".join(message.split())[:300]
    return quote(line, safe=_HEADER_SAFE)


def add_action_errors(form: Any, exc: ValidationError, *, rename: dict[str, str] | None = None) -> None:
    """Show an action's ValidationError on the form: per-field messages on their fields (`rename` maps an action's
    field name to the form's), the rest on top."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            field = (rename or {}).get(field, field)
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _page_for_a_form_address(request: HttpRequest) -> HttpResponse | None:
    """A console address that only takes a form post, opened as a page (the address bar after a refused form
    came back, a bookmark, a reload) was a blank 405: go to the nearest page above it instead
    (/tasks/<id>/reply/ → the task, /org/keys/<id>/rotate/ → the keys page)."""
    from django.urls import Resolver404, resolve

    parts = request.path.rstrip("/").split("/")
    while len(parts) > 1:
        parts.pop()
        candidate = "/".join(parts) + "/"
        try:
            resolve(candidate)
        except Resolver404:
            continue
        messages.info(request, "That address only takes a form submission; this is the page it belongs to.")
        return redirect(candidate)
    return None


def _page_redirect_for_a_fragment(request: HttpRequest, response: HttpResponse) -> HttpResponse | None:
    """A fragment request sent to sign in (the session ended in another tab) or to create an org (the person was
    removed from their only one) was followed by htmx inside the swap: the whole login page landed in a card, its
    autofocus took the keyboard. The page goes there instead, and after signing in comes back to the page the
    person was on (not to the fragment's address)."""
    from urllib.parse import urlsplit

    from django.conf import settings
    from django.contrib.auth.views import redirect_to_login
    from django.urls import reverse

    target = urlsplit(response["Location"])
    if target.path == settings.LOGIN_URL:
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        page = current.path if current.netloc in ("", request.get_host()) and current.path else "/"
        page += f"?{current.query}" if current.query else ""
        return hx_redirect(request, redirect_to_login(page)["Location"])
    if target.path == reverse("orgs:create"):
        return hx_redirect(request, response["Location"])
    return None


def shows_one_object(url: str) -> bool:
    """Whether a console URL is the page of one object (its route takes an id), not a section's page."""
    from django.urls import Resolver404, resolve

    try:
        return bool(resolve(urlsplit(url).path).kwargs)
    except Resolver404:
        return False


class ConsoleErrorMiddleware:
    """A refused action (HermesAPIError: 403 role, 409 conflict, …) raised by a console view becomes a readable
    answer instead of a 500: htmx requests get the status and X-Hermes-Error (shown as a toast); a plain form post
    goes back where it came from with the message flashed, and its form filled in again (static/js/hermes.js).
    The API never gets here: DRF handles its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 405 and request.method == "GET" and not request.path.startswith("/api/"):
            return _page_for_a_form_address(request) or response
        if is_fragment_request(request) and response.status_code == 302:
            return _page_redirect_for_a_fragment(request, response) or response
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from apps.core.errors import HermesAPIError, handler403, handler404

        if not isinstance(exception, HermesAPIError) or request.path.startswith("/api/"):
            return None
        message = str(exception.detail)
        status = int(exception.status_code)
        if status == 403:
            return handler403(request, PermissionDenied(message))
        if status == 404:
            return handler404(request, None)
        if getattr(request, "htmx", None) or request.method == "GET":
            response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
            response[ERROR_MESSAGE_HEADER] = error_message_header(message)
            return response
        # Marked, so that hermes.js fills the form in again with what was typed in it (kept in the tab's
        # sessionStorage on submit): the page comes back through a redirect (a reload must not post again), and a
        # message typed for the org the page showed was lost when another tab had switched org.
        messages.error(request, message, extra_tags=REFUSED_POST_TAG)
        referer = request.headers.get("Referer", "")
        if not url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()}):
            referer = "/"
        elif getattr(exception, "error_code", "") == "org_switched" and shows_one_object(referer):
            # The page of a task (an agent, …) of the org switched away from: loading it again switches the session
            # back to that org (apps.orgs.decorators.switch_to_the_org_holding), undoing the other tab's switch
            # under a refusal that says the session is in the other org. The console's home keeps the session
            # where it is; what was typed stays kept for that page's org (static/js/hermes.js).
            referer = "/"
        return redirect(referer)
