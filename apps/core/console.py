"""Console (HTML + HTMX) rendering shared by every app's views.py.

One template per page; the fragments HTMX swaps are `{% partialdef %}` blocks inside it, so the full page and the
swap render the same markup. `render_console` picks the fragment when htmx asks for it (and not for a boosted
navigation, which wants the whole page) and marks the response `Vary: HX-Request` so caches keep both answers apart.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers

# Header the console's htmx error handler shows as-is (kept short and ASCII: header values are latin-1).
ERROR_MESSAGE_HEADER = "X-Hermes-Error"


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

    A fragment response also carries pending flash messages as an out-of-band swap, so a message queued by the
    action the fragment answers is shown without a page load.
    """
    fragment = partial is not None and is_fragment_request(request)
    name = f"{template_name}#{partial}" if fragment else template_name
    response = render(request, name, context or {}, status=status)
    if fragment and len(messages.get_messages(request)):
        oob = render_to_string("includes/messages.html", {"oob": True}, request=request)
        response.content = response.content + oob.encode()
    patch_vary_headers(response, ("HX-Request",))
    return response


def hx_redirect(request: HttpRequest, url: str) -> HttpResponse:
    """Send the browser to `url`: HX-Redirect for htmx (a 302 would be followed inside the swap), 302 otherwise."""
    from django.shortcuts import redirect

    if getattr(request, "htmx", None):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def error_message_header(message: str) -> str:
    """The header value for ERROR_MESSAGE_HEADER: one line, latin-1 safe, bounded."""
    line = " ".join(message.split())[:300]
    return line.encode("latin-1", "replace").decode("latin-1")
