"""Django settings: every value comes from the environment via hermes_site.config (see docs/configuration.md)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import environ
from csp import constants as csp_constants

from hermes_site import config as hermes_config
from hermes_site.embedded import embedded_redis_url

CONFIG = hermes_config.load_or_exit()
env: environ.Env = CONFIG.raw

BASE_DIR = hermes_config.BASE_DIR
HERMES_ENV = CONFIG.env
HERMES_VERSION = "0.1.0"
HERMES_FEATURES = CONFIG.features
PRODUCTION = HERMES_ENV == "production"
SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG["CSRF_TRUSTED_ORIGINS"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "channels",
    "apps.core",
    "apps.accounts",
    "apps.orgs",
    "apps.agents",
    "apps.tasks",
    "apps.federation",
    "apps.ops",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.orgs.quotas.RateLimitHeadersMiddleware",
    "apps.core.console.ConsoleErrorMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Content-Security-Policy (django-csp): the console loads scripts, styles and images from this origin only, so an
# injected <script> (or inline handler) would not run even if a template escaped something wrongly. Inline style
# attributes stay allowed (templates use a few, and htmx adds its indicator style). The API's interactive docs
# (drf-spectacular's Swagger UI starts itself with an inline script) are left out.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs/"],
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF, csp_constants.UNSAFE_INLINE],
        "img-src": [csp_constants.SELF, "data:"],
        "connect-src": [csp_constants.SELF],  # same-origin websockets included (CSP 3)
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.SELF],
        "form-action": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    },
}

ROOT_URLCONF = "hermes_site.urls"
WSGI_APPLICATION = "hermes_site.wsgi.application"
ASGI_APPLICATION = "hermes_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.orgs.context_processors.console",
            ],
            # {% partialdef %} in every template without a {% load %} (template_partials wraps the loaders).
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

# --- Database ---------------------------------------------------------------------------------------------
# WSGI processes keep persistent connections (CONN_MAX_AGE). ASGI processes must not: every sync_to_async thread
# would keep its own connection until Postgres refuses new ones, so asgi.py sets DATABASE_POOL=true and we use
# psycopg's pool instead (the two options are mutually exclusive in Django).
_db: dict[str, Any] = env.db_url_config(CONFIG.database_url)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    os.makedirs(hermes_config.VAR_DIR, exist_ok=True)
    # WAL lets the web process read while the worker writes; the timeout rides out short write locks.
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _db.setdefault("OPTIONS", {})["connect_timeout"] = 3
    if CONFIG["DATABASE_POOL"]:
        _db["OPTIONS"]["pool"] = {"min_size": 1, "max_size": CONFIG["DATABASE_POOL_MAX"], "timeout": 5}
        _db["CONN_MAX_AGE"] = 0
    else:
        _db["CONN_MAX_AGE"] = 60
        _db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, channels, Celery --------------------------------------------------------------------
_EMBEDDED_REDIS_URL = None if CONFIG.redis_url else embedded_redis_url()
REDIS_URL: str = CONFIG.redis_url or _EMBEDDED_REDIS_URL or "redis://127.0.0.1:6379/0"
# Only when the embedded server is what REDIS_URL points at (a command run without `make run` uses the default).
REDIS_IS_EMBEDDED = _EMBEDDED_REDIS_URL is not None
# "REDIS_URL is not set" is advice for a deployment; under `make run`, which started the embedded server for exactly
# that case, every process printed it right under "redis ok (embedded)".
HERMES_CONFIG_WARNINGS = [w for w in CONFIG.warnings if not (REDIS_IS_EMBEDDED and w[0].startswith("REDIS_URL "))]
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hermes",
        # Short timeouts: a dead Redis must cost a request milliseconds, not seconds (quotas fail open).
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
    "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "hermes-local"},
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": hermes_config.channel_prefix(REDIS_URL)},
    },
    # For websockets opened while Redis is unreachable (apps.tasks.consumers): they follow the database instead.
    "degraded": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
}

CELERY_BROKER_URL = CONFIG.broker_url or REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = CONFIG["CELERY_TASK_DEFAULT_QUEUE"]
CELERY_TASK_ALWAYS_EAGER = CONFIG["CELERY_TASK_ALWAYS_EAGER"]
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# The database row is the truth for every job; a lost message is re-dispatched by the sweepers, so we ack late
# and let a killed worker's job return to the queue.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup otherwise closes every database connection before and after each job, so each job pays a
# new Postgres connection (a backend process) — the largest fixed cost of short jobs such as federation deliveries.
# CONN_MAX_AGE and CONN_HEALTH_CHECKS already retire stale connections; this only stops the per-job churn.
CELERY_DB_REUSE_MAX = 1000
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis broker that hangs (overloaded, a partition that drops packets) must not hang the request that publishes:
# every publish is backed by a database row that a sweeper re-dispatches, so it may fail fast. socket_timeout stays
# above kombu's 1 s BRPOP poll, which workers block on; an AMQP broker ignores both Redis options.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 2, "socket_timeout": 2}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
HERMES_TASK_SWEEP_SECONDS = CONFIG["HERMES_TASK_SWEEP_SECONDS"]
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "ops-heartbeat": {"task": "apps.ops.tasks.beat_heartbeat", "schedule": timedelta(seconds=15)},
    "core-purge-idempotency": {"task": "apps.core.tasks.purge_idempotency_records", "schedule": timedelta(hours=1)},
    # Re-enqueues overdue outbox rows and expires stale in-flight leases: a lost broker message delays a
    # federation delivery, never loses it.
    "federation-sweep-outbox": {
        "task": "apps.federation.tasks.sweep_outbox",
        "schedule": timedelta(seconds=CONFIG["HERMES_FEDERATION_SWEEP_INTERVAL"]),
    },
    # Re-dispatches tasks whose worker died or whose message was lost; fails tasks past their deadline.
    "tasks-sweeper": {
        "task": "apps.tasks.tasks.sweep_tasks",
        "schedule": timedelta(seconds=HERMES_TASK_SWEEP_SECONDS),
    },
}

# --- Auth ---------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if HERMES_ENV == "test":
    # Hashing cost dominates test time; production keeps Django's default hashers.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CSRF_FAILURE_VIEW = "apps.core.errors.csrf_failure"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
PASSWORD_RESET_TIMEOUT = 3600

vars().update(hermes_config.email_settings(CONFIG["EMAIL_URL"]))
DEFAULT_FROM_EMAIL = CONFIG["DEFAULT_FROM_EMAIL"]

# --- HTTP, static, security ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = CONFIG["SECURE_SSL_REDIRECT"]
# Machine endpoints called directly on a process's plain-HTTP port, not through the TLS proxy: probes, the
# Prometheus scrape (deploy/prometheus/prometheus.yml targets web:8000 and websocket:8001; METRICS_ALLOWED_IPS is
# for such direct scrapes) and the egress diagnostic (bearer token or an allowed address, like /metrics). A 301 to
# https:// on a port that speaks no TLS failed every scrape, and turned the ping's POST into a GET. The redirect
# protects nothing here: a token sent over plain HTTP was already sent when the 301 came back.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health", r"^metrics$", r"^api/v1/ops/ping(/|$)"]
SECURE_HSTS_SECONDS = CONFIG["SECURE_HSTS_SECONDS"]
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
X_FRAME_OPTIONS = "DENY"

# --- DRF ---------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The API key first: its authenticate_header makes unauthenticated requests a 401 with a Bearer challenge.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.orgs.auth.APIKeyAuthentication",
        "apps.orgs.auth.SessionOrgAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Per-org (and per-key) requests per minute, after authentication and permissions (docs/quotas.md).
    "DEFAULT_THROTTLE_CLASSES": ["apps.orgs.quotas.OrgQuotaThrottle"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.HermesAutoSchema",
    "EXCEPTION_HANDLER": "apps.core.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only: the bodies nest (a task's input, a key's scopes), which a form cannot carry, and the schema
    # advertises what the parsers take. Anything else is a 415. DRF's JSON parser, guarded against bodies nested
    # deeper than Python's recursion limit (a 500 otherwise).
    "DEFAULT_PARSER_CLASSES": ["apps.core.jsonutil.JSONParser"],
    # No `?format=`: the API only speaks JSON, and DRF answered a format it has no renderer for with a 404
    # `not_found`. The schema view keeps `?format=json|yaml` (apps.core.schema.SchemaContentNegotiation).
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hermes API",
    "DESCRIPTION": "Multi-tenant A2A agent platform. Authenticate with `Authorization: Bearer hrm_…` (API key).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI's scripts are served by Hermes itself (drf-spectacular-sidecar), not from a CDN: the API docs
    # must work on an instance without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "FederationOutboxStatusEnum": "apps.federation.models.OutboxStatus",
        "FederationPeerStatusEnum": "apps.federation.models.PeerStatus",
        "TaskStatusEnum": "apps.tasks.models.TaskState",  # a task's `status`, and its timeline page's
        # Two `state` choice sets: an API key's, and the federation link keys' (which keep their name).
        "APIKeyStateEnum": "apps.orgs.models.APIKeyState",
        "StateEnum": "apps.federation.models.KeyState",
        # Every type a message may have (what the API shows); SendMessage.type takes only the users' types.
        "FederationMessageTypeEnum": "apps.federation.models.MessageType",
    },
}

# --- Hermes ------------------------------------------------------------------------------------------------
HERMES_PUBLIC_URL = CONFIG["HERMES_PUBLIC_URL"].rstrip("/")
HERMES_SSRF_ALLOWLIST: list[str] = list(CONFIG["HERMES_SSRF_ALLOWLIST"])
if HERMES_ENV == "dev":
    # Dev serves its own demo agents on loopback.
    HERMES_SSRF_ALLOWLIST += ["127.0.0.1", "localhost", "::1"]
HERMES_FEDERATION_HMAC = CONFIG["HERMES_FEDERATION_HMAC"]
HERMES_FEDERATION_TOLERANCE = CONFIG["HERMES_FEDERATION_TOLERANCE"]
HERMES_FIELD_KEY = CONFIG["HERMES_FIELD_KEY"]
HERMES_FEDERATION_DEFAULT_POLICY = CONFIG["HERMES_FEDERATION_DEFAULT_POLICY"]
HERMES_FEDERATION_POLICY_CACHE_TTL = CONFIG["HERMES_FEDERATION_POLICY_CACHE_TTL"]
HERMES_FEDERATION_MAX_ATTEMPTS = CONFIG["HERMES_FEDERATION_MAX_ATTEMPTS"]
HERMES_FEDERATION_MAX_AGE = CONFIG["HERMES_FEDERATION_MAX_AGE"]
HERMES_FEDERATION_RETRY_BASE = CONFIG["HERMES_FEDERATION_RETRY_BASE"]
HERMES_FEDERATION_RETRY_MAX_DELAY = CONFIG["HERMES_FEDERATION_RETRY_MAX_DELAY"]
HERMES_FEDERATION_TIMEOUT = CONFIG["HERMES_FEDERATION_TIMEOUT"]
HERMES_FEDERATION_INBOUND_PER_MINUTE = CONFIG["HERMES_FEDERATION_INBOUND_PER_MINUTE"]
HERMES_FEDERATION_SWEEP_INTERVAL = CONFIG["HERMES_FEDERATION_SWEEP_INTERVAL"]
HERMES_MAX_TASK_INPUT_BYTES = CONFIG["HERMES_MAX_TASK_INPUT_BYTES"]
HERMES_MAX_EVENT_BYTES = CONFIG["HERMES_MAX_EVENT_BYTES"]
HERMES_DEMO_FLAKY_FAILURE_RATE = CONFIG["HERMES_DEMO_FLAKY_FAILURE_RATE"]
HERMES_DEMO_FLAKY_SEED = CONFIG["HERMES_DEMO_FLAKY_SEED"]
HERMES_TASK_DEADLINE_SECONDS = CONFIG["HERMES_TASK_DEADLINE_SECONDS"]
HERMES_TASK_HEARTBEAT_SECONDS = CONFIG["HERMES_TASK_HEARTBEAT_SECONDS"]
HERMES_TASK_STALE_SECONDS = CONFIG["HERMES_TASK_STALE_SECONDS"]
HERMES_TASK_REDISPATCH_SECONDS = CONFIG["HERMES_TASK_REDISPATCH_SECONDS"]
HERMES_TASK_MAX_ATTEMPTS = CONFIG["HERMES_TASK_MAX_ATTEMPTS"]
HERMES_TASK_RETRY_BASE_SECONDS = CONFIG["HERMES_TASK_RETRY_BASE_SECONDS"]
HERMES_TASK_RETRY_MAX_SECONDS = CONFIG["HERMES_TASK_RETRY_MAX_SECONDS"]
HERMES_TASK_POLL_SECONDS = CONFIG["HERMES_TASK_POLL_SECONDS"]
HERMES_SSE_MAX_SECONDS = CONFIG["HERMES_SSE_MAX_SECONDS"]
HERMES_SSE_POLL_SECONDS = CONFIG["HERMES_SSE_POLL_SECONDS"]
HERMES_WS_RESYNC_SECONDS = CONFIG["HERMES_WS_RESYNC_SECONDS"]
METRICS_TOKEN = CONFIG["METRICS_TOKEN"]
METRICS_ALLOWED_IPS: list[str] = CONFIG["METRICS_ALLOWED_IPS"]
HERMES_TRUSTED_PROXIES: list[str] = CONFIG["HERMES_TRUSTED_PROXIES"]
CELERY_WORKER_METRICS_PORT = CONFIG["CELERY_WORKER_METRICS_PORT"]
CELERY_WORKER_METRICS_HOST = CONFIG["CELERY_WORKER_METRICS_HOST"]
HERMES_BACKUP_DIR = CONFIG["HERMES_BACKUP_DIR"]
HEALTH_STALE_AFTER = CONFIG["HEALTH_STALE_AFTER"]
OTEL_EXPORTER_OTLP_ENDPOINT = CONFIG["OTEL_EXPORTER_OTLP_ENDPOINT"]
OTEL_SERVICE_NAME = CONFIG["OTEL_SERVICE_NAME"]

# --- Logging ------------------------------------------------------------------------------------------------
LOG_LEVEL = CONFIG["LOG_LEVEL"]
LOG_FORMAT = CONFIG["LOG_FORMAT"]
LOG_SAMPLE_RATE = CONFIG["LOG_SAMPLE_RATE"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "apps.core.logging.ContextFilter"},
        "redact": {"()": "apps.core.logging.RedactFilter"},
        "tracebacks_only": {"()": "apps.core.logging.TracebacksOnly"},
        "sampled": {"()": "apps.core.logging.SampleFilter", "rate": LOG_SAMPLE_RATE},
    },
    "formatters": {
        "json": {"()": "apps.core.logging.JsonFormatter"},
        "console": {
            "format": "%(asctime)s %(levelname)-7s %(name)s "
            "[%(request_id)s org=%(org_id)s user=%(user_id)s] %(message)s"
        },
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "filters": ["context", "redact"],
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["default"], "level": LOG_LEVEL},
    "loggers": {
        # Without handlers of its own: Django's default config gives "django" a plain-text console handler (DEBUG
        # only), which wrote a second, non-JSON copy of every line.
        "django": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "WARNING"},
        # hermes.request logs one line per request; Django's own 4xx/5xx line would repeat it (and call a
        # deliberate 503 an ERROR). Its tracebacks of unhandled exceptions are kept.
        "django.request": {"level": "ERROR", "filters": ["tracebacks_only"]},
        "celery": {"level": "INFO"},
        # Noisy subsystems (apps.core.logging.NOISY_LOGGERS): kept at LOG_SAMPLE_RATE below WARNING.
        "hermes.probes": {"filters": ["sampled"]},
        "hermes.ws.heartbeat": {"filters": ["sampled"]},
        "hermes.sweeper": {"filters": ["sampled"]},
    },
}
# Celery would replace the root handler with its own plain-text one; keep ours so worker lines are JSON too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
