"""Operational endpoints: liveness, readiness, the health breakdown. Plain Django views: no session or API-key
machinery in the way of a probe, and nothing here changes state."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST, require_safe
from prometheus_client import CONTENT_TYPE_LATEST

from apps.core import jsonutil
from apps.core.checks import health_report, readiness_report
from apps.core.errors import error_body, json_error
from apps.ops import metrics as ops_metrics
from apps.ops.access import is_operator, request_allowed
from apps.ops.tasks import PING_KEY, PING_TTL_S, ping_url


@require_safe  # GET and HEAD: load balancers and uptime checks probe with HEAD
def health_live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; no dependency is touched (so a DB/Redis outage never restarts us)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe  # GET and HEAD: load balancers and uptime checks probe with HEAD
def health_ready(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 only with the database (migrations applied), Redis and the broker up; 503 names the rest."""
    report = readiness_report()
    body = {
        "status": "ready" if report.ready else "not_ready",
        "failing": report.failing,
        "checks": {p.name: p.status for p in report.probes},
    }
    return JsonResponse(body, status=200 if report.ready else 503)


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The breakdown for operators (it names hosts, queues and migrations): METRICS_TOKEN, allowed IPs or staff."""
    if not is_operator(request):
        return json_error(
            request,
            "forbidden",
            "The health breakdown is for operators: send `Authorization: Bearer <METRICS_TOKEN>`, call from an "
            "address in METRICS_ALLOWED_IPS, or sign in as staff. /api/v1/health/ready is public.",
            403,
        )
    report = health_report()
    return JsonResponse(report.as_dict(), status=200 if report.ready else 503)


@never_cache
@require_safe  # GET and HEAD: load balancers and uptime checks probe with HEAD
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape target: django-prometheus HTTP/DB metrics, Hermes metrics, pool and outbox gauges."""
    if not settings.HERMES_FEATURES.get("metrics", True):
        return json_error(request, "not_found", "Metrics are disabled (HERMES_FEATURE_METRICS=false).", 404)
    if not is_operator(request):
        response = json_error(
            request,
            "forbidden",
            "Scrape with `Authorization: Bearer <METRICS_TOKEN>` or from an address in METRICS_ALLOWED_IPS.",
            403,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(ops_metrics.render(), content_type=CONTENT_TYPE_LATEST)


@csrf_exempt  # machine-to-machine: a bearer token or an allowed address, never a session cookie
@require_POST
def ping_create(request: HttpRequest) -> JsonResponse:
    """Ask a worker to GET a URL (egress, DNS, TLS and latency from where jobs run). Operators only."""
    if not request_allowed(request):
        return json_error(
            request, "forbidden", "Use `Authorization: Bearer <METRICS_TOKEN>` or an allowed address.", 403
        )
    # Exempt from CSRF, this endpoint must not be driven by a page of another site open in a browser on an allowed
    # address (an operator's laptop on loopback): a cross-site "simple" request (a text/plain POST, no preflight)
    # would otherwise make a worker GET any URL it names.
    if _cross_site(request):
        return json_error(
            request,
            "forbidden",
            "Cross-site requests are refused: call this endpoint from a script or a server, not from another "
            "site's page.",
            403,
        )
    if request.body and request.content_type != "application/json":
        return json_error(
            request,
            "unsupported_media_type",
            f"The body must be application/json (it was {request.content_type or 'unlabelled'}): send "
            '`Content-Type: application/json` with {"url": "https://…"}.',
            415,
        )
    try:
        payload = jsonutil.loads(request.body or b"{}")
    except ValueError:
        return json_error(request, "invalid", 'The body must be JSON: {"url": "https://…"}.', 400)
    url = payload.get("url") if isinstance(payload, dict) else None
    problem = _url_problem(url)
    if problem:
        return JsonResponse(
            error_body("invalid", "The request has invalid fields; see details.", {"url": [problem]}), status=400
        )
    probe_id = uuid.uuid4().hex
    caches["default"].set(PING_KEY.format(probe_id), {"id": probe_id, "url": url, "status": "pending"}, PING_TTL_S)
    ping_url.delay(probe_id, url)
    return JsonResponse({"id": probe_id, "status": "pending", "url": url}, status=202)


@never_cache
@require_GET
def ping_detail(request: HttpRequest, probe_id: str) -> JsonResponse:
    if not request_allowed(request):
        return json_error(
            request, "forbidden", "Use `Authorization: Bearer <METRICS_TOKEN>` or an allowed address.", 403
        )
    result = caches["default"].get(PING_KEY.format(probe_id))
    if result is None:
        return json_error(request, "not_found", "Not found.", 404)
    return JsonResponse(result)


def _cross_site(request: HttpRequest) -> bool:
    """Whether a browser sent this request from a page of another site. Scripts and servers send neither header;
    browsers send `Origin` on every POST and `Sec-Fetch-Site` on every request (`null` is an opaque origin: a
    sandboxed frame, a file, a redirect across sites)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None or origin in settings.CSRF_TRUSTED_ORIGINS:
        return False
    return origin.lower() != f"{request.scheme}://{request.get_host()}".lower()


MACHINE_ONLY = "Use `Authorization: Bearer <METRICS_TOKEN>` or call from an address in METRICS_ALLOWED_IPS."


def _url_problem(url: object) -> str | None:
    if not isinstance(url, str) or not url:
        return "This field is required."
    if len(url) > 2000:
        return "At most 2000 characters."
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "Enter an http:// or https:// URL with a host."
    return None
