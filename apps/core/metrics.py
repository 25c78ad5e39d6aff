"""Every Hermes-specific Prometheus metric, declared once (deploy/ alert rules and dashboards name these).

django-prometheus adds the HTTP and database metrics; these cover the domain. Names are prefixed `hermes_`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Access layer
QUOTA_REJECTIONS = Counter("hermes_quota_rejections_total", "Requests refused by a quota", ["limit"])
QUOTA_FAIL_OPEN = Counter("hermes_quota_fail_open_total", "Quota checks skipped because Redis was unreachable")
API_KEY_AUTH = Counter("hermes_api_key_auth_total", "API key authentications by outcome", ["outcome"])

# Tasks
TASKS = Counter("hermes_tasks_total", "Tasks reaching a state", ["state", "agent"])
TASK_DURATION = Histogram(
    "hermes_task_duration_seconds",
    "Submit to terminal state",
    ["state", "agent"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TASK_RETRIES = Counter("hermes_task_transport_retries_total", "Transport errors to agents that were retried", ["agent"])
TASKS_RECOVERED = Counter("hermes_tasks_recovered_total", "Tasks re-dispatched or failed by the sweeper", ["outcome"])
WEBSOCKET_CONNECTIONS = Gauge("hermes_websocket_connections", "Open websocket connections", ["stream"])

# Federation
FEDERATION_DELIVERIES = Counter("hermes_federation_deliveries_total", "Outbound delivery attempts", ["outcome"])
FEDERATION_RETRIES = Counter("hermes_federation_retries_total", "Outbound deliveries scheduled for retry")
FEDERATION_DEAD_LETTERS = Gauge("hermes_federation_dead_letters", "Messages in the dead-letter queue")
FEDERATION_DELIVERY_LATENCY = Histogram(
    "hermes_federation_delivery_latency_seconds",
    "Enqueue to receipt",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
FEDERATION_INBOUND = Counter("hermes_federation_inbound_total", "Inbound federation requests by decision", ["decision"])
FEDERATION_POLICY = Counter("hermes_federation_policy_decisions_total", "Policy decisions", ["decision"])
FEDERATION_POLICY_CACHE = Counter("hermes_federation_policy_cache_total", "Policy cache lookups", ["result"])
