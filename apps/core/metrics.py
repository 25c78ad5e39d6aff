"""Every Hermes-specific Prometheus metric, declared once (deploy/ alert rules and dashboards name these).

django-prometheus adds the HTTP and database metrics; these cover the domain. Names are prefixed `hermes_`.

Multi-process (gunicorn workers, prefork Celery children): with PROMETHEUS_MULTIPROC_DIR set, prometheus_client
keeps every value in a per-process file and `/metrics` sums them. Each Gauge therefore says how processes combine:
`livesum` for counts that live in the process holding them (websocket connections), `mostrecent` for values
recomputed from the database at scrape time (whichever process scraped last is right for everyone).
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
# Consumers call .labels(stream=...).inc() on connect and .dec() on disconnect.
WEBSOCKET_CONNECTIONS = Gauge(
    "hermes_websocket_connections", "Open websocket connections", ["stream"], multiprocess_mode="livesum"
)

# Celery jobs (every job, counted by the signal handlers in apps.core.celery_signals)
CELERY_JOBS = Counter("hermes_celery_jobs_total", "Celery jobs finished, by job name and outcome", ["job", "outcome"])
CELERY_JOB_DURATION = Histogram(
    "hermes_celery_job_duration_seconds",
    "Celery job run time",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# Federation
# outcome: delivered, retried, failed (permanent), dead (moved to the dead-letter queue)
FEDERATION_DELIVERIES = Counter("hermes_federation_deliveries_total", "Outbound delivery attempts", ["outcome"])
FEDERATION_RETRIES = Counter("hermes_federation_retries_total", "Outbound deliveries scheduled for retry")
# Set at scrape time from apps.federation.selectors.delivery_backlog() (apps.ops.metrics).
FEDERATION_DEAD_LETTERS = Gauge(
    "hermes_federation_dead_letters", "Messages in the dead-letter queue", multiprocess_mode="mostrecent"
)
FEDERATION_OUTBOX_BACKLOG = Gauge(
    "hermes_federation_outbox_backlog", "Outbound messages not yet delivered", multiprocess_mode="mostrecent"
)
FEDERATION_OLDEST_PENDING_AGE = Gauge(
    "hermes_federation_oldest_pending_age_seconds",
    "Age of the oldest undelivered outbound message (0 when none)",
    multiprocess_mode="mostrecent",
)
FEDERATION_DELIVERY_LATENCY = Histogram(
    "hermes_federation_delivery_latency_seconds",
    "Enqueue to receipt",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
FEDERATION_INBOUND = Counter("hermes_federation_inbound_total", "Inbound federation requests by decision", ["decision"])
FEDERATION_POLICY = Counter("hermes_federation_policy_decisions_total", "Policy decisions", ["decision"])
FEDERATION_POLICY_CACHE = Counter("hermes_federation_policy_cache_total", "Policy cache lookups", ["result"])

# Health, refreshed at every scrape from apps.core.checks.health_report() (apps.ops.metrics)
HEALTH_STATUS = Gauge(
    "hermes_health_status", "1 when a health check passes, 0 when it fails", ["check"], multiprocess_mode="mostrecent"
)
HEALTH_LATENCY = Gauge(
    "hermes_health_check_latency_seconds", "Duration of a health check", ["check"], multiprocess_mode="mostrecent"
)

# Usage per organization (the org bound to the request after authentication); one series per org and class.
ORG_API_REQUESTS = Counter(
    "hermes_org_api_requests_total", "API requests made by an organization", ["org_id", "status_class"]
)
