"""Writes the Grafana dashboards in this directory: `python deploy/grafana/generate.py`.

Dashboards are generated so every panel has the same shape (Prometheus datasource variable, grid layout); the
JSON files are committed, and apps/ops/tests/test_metrics.py checks every metric their queries name exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
API = 'view!~"health.*|prometheus-metrics"'
RESPONSES = "django_http_responses_total_by_status_view_method_total"


def quantile(q: float, histogram: str, by: str = "le", window: str = "5m") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket[{window}])))"


def panel(title: str, exprs: list[tuple[str, str]], *, kind: str = "timeseries", unit: str = "short") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend} for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}
    return {
        "uid": uid,
        "title": title,
        "tags": ["hermes"],
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


DASHBOARDS = {
    "hermes-health.json": dashboard(
        "hermes-health",
        "Hermes / Health",
        [
            panel("Dependency status (1 = ok)", [("min by (check) (hermes_health_status)", "{{check}}")], kind="stat"),
            panel(
                "Health check latency",
                [("max by (check) (hermes_health_check_latency_seconds)", "{{check}}")],
                unit="s",
            ),
            panel("Celery jobs by outcome", [("sum by (outcome) (rate(hermes_celery_jobs_total[5m]))", "{{outcome}}")]),
            panel(
                "Celery job p95 duration",
                [
                    (
                        quantile(0.95, "hermes_celery_job_duration_seconds", by="le, job"),
                        "{{job}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Database pool",
                [
                    ("sum(hermes_db_pool_size)", "size"),
                    ("sum(hermes_db_pool_available)", "available"),
                    ("sum(hermes_db_pool_requests_waiting)", "waiting"),
                ],
            ),
            panel("Open websocket connections", [("sum by (stream) (hermes_websocket_connections)", "{{stream}}")]),
            panel(
                "Database queries per second",
                [
                    ("sum(rate(django_db_execute_total[5m]))", "queries"),
                    ("sum(rate(django_db_errors_total[5m]))", "errors"),
                ],
            ),
            panel("Tasks by state", [("sum by (state) (rate(hermes_tasks_total[5m]))", "{{state}}")]),
        ],
    ),
    "hermes-errors.json": dashboard(
        "hermes-errors",
        "Hermes / Errors by route",
        [
            panel(
                "5xx by route",
                [
                    (
                        f'sum by (view) (rate({RESPONSES}{{status=~"5.."}}[5m]))',
                        "{{view}}",
                    )
                ],
            ),
            panel(
                "4xx by route",
                [
                    (
                        f'sum by (view, status) (rate({RESPONSES}{{status=~"4.."}}[5m]))',
                        "{{view}} {{status}}",
                    )
                ],
            ),
            panel(
                "Exceptions by type",
                [("sum by (type) (rate(django_http_exceptions_total_by_type_total[5m]))", "{{type}}")],
            ),
            panel(
                "p95 latency by route",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, view) "
                        f"(rate(django_http_requests_latency_seconds_by_view_method_bucket{{{API}}}[5m])))",
                        "{{view}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Requests by route",
                [("sum by (view) (rate(django_http_requests_total_by_view_transport_method_total[5m]))", "{{view}}")],
            ),
            panel(
                "Task transport retries by agent",
                [("sum by (agent) (rate(hermes_task_transport_retries_total[5m]))", "{{agent}}")],
            ),
        ],
    ),
    "hermes-federation.json": dashboard(
        "hermes-federation",
        "Hermes / Federation retries",
        [
            panel(
                "Deliveries by outcome",
                [("sum by (outcome) (rate(hermes_federation_deliveries_total[5m]))", "{{outcome}}")],
            ),
            panel("Retries scheduled", [("sum(rate(hermes_federation_retries_total[5m]))", "retries")]),
            panel(
                "Outbox",
                [
                    ("max(hermes_federation_outbox_backlog)", "backlog"),
                    ("max(hermes_federation_dead_letters)", "dead letters"),
                ],
            ),
            panel(
                "Oldest pending message age", [("max(hermes_federation_oldest_pending_age_seconds)", "age")], unit="s"
            ),
            panel(
                "Delivery latency p50 / p95",
                [
                    (
                        quantile(0.5, "hermes_federation_delivery_latency_seconds"),
                        "p50",
                    ),
                    (
                        quantile(0.95, "hermes_federation_delivery_latency_seconds"),
                        "p95",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Inbound decisions", [("sum by (decision) (rate(hermes_federation_inbound_total[5m]))", "{{decision}}")]
            ),
            panel(
                "Policy decisions and cache",
                [
                    ("sum by (decision) (rate(hermes_federation_policy_decisions_total[5m]))", "{{decision}}"),
                    ("sum by (result) (rate(hermes_federation_policy_cache_total[5m]))", "cache {{result}}"),
                ],
            ),
        ],
    ),
    "hermes-org-usage.json": dashboard(
        "hermes-org-usage",
        "Hermes / Top organizations",
        [
            panel(
                "Top 10 organizations by API requests",
                [("topk(10, sum by (org_id) (rate(hermes_org_api_requests_total[1h])))", "org {{org_id}}")],
            ),
            panel(
                "Errors by organization",
                [
                    (
                        'topk(10, sum by (org_id) (rate(hermes_org_api_requests_total{status_class=~"4xx|5xx"}[1h])))',
                        "org {{org_id}}",
                    )
                ],
            ),
            panel(
                "Quota rejections by limit", [("sum by (limit) (rate(hermes_quota_rejections_total[5m]))", "{{limit}}")]
            ),
            panel("Quota checks failed open", [("sum(rate(hermes_quota_fail_open_total[5m]))", "fail open")]),
            panel(
                "API key authentications", [("sum by (outcome) (rate(hermes_api_key_auth_total[5m]))", "{{outcome}}")]
            ),
            panel("Tasks by agent", [("topk(10, sum by (agent) (rate(hermes_tasks_total[1h])))", "{{agent}}")]),
        ],
    ),
}


def main() -> None:
    for name, board in DASHBOARDS.items():
        (HERE / name).write_text(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
