"""Operational endpoints: liveness, readiness, the health breakdown. Plain Django views: no session or API-key
machinery in the way of a probe, and nothing here changes state."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from apps.core.checks import health_report, readiness_report
from apps.core.errors import json_error
from apps.ops import metrics as ops_metrics
from apps.ops.access import is_operator

# Probes hit these every few seconds: the logger is sampled (LOG_SAMPLE_RATE), see apps.core.logging.
probe_log = logging.getLogger("hermes.probes")


@require_GET
def health_live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; no dependency is touched (so a DB/Redis outage never restarts us)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 only with the database (migrations applied), Redis and the broker up; 503 names the rest."""
    report = readiness_report()
    body = {
        "status": "ready" if report.ready else "not_ready",
        "failing": report.failing,
        "checks": {p.name: p.status for p in report.probes},
    }
    probe_log.info("readiness %s", body["status"], extra={"failing": report.failing})
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
    probe_log.info("health %s", report.status, extra={"failing": report.failing, "degraded": report.degraded})
    return JsonResponse(report.as_dict(), status=200 if report.ready else 503)


@never_cache
@require_GET
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
    probe_log.info("metrics scraped")
    return HttpResponse(ops_metrics.render(), content_type=CONTENT_TYPE_LATEST)
