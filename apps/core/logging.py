"""Log records carrying the request/job context: JSON (one object per line) in production, readable in dev.

- `ContextFilter` (on the handler) copies the bound context (apps.core.context) and the current trace id onto
  every record, so any formatter can use `%(request_id)s` and friends.
- `JsonFormatter` writes timestamp, level, logger, message, the context fields, trace_id, exception text and
  any `extra=` values.
- `SampleFilter` keeps only LOG_SAMPLE_RATE of the INFO/DEBUG lines of noisy loggers (health probes, websocket
  heartbeats, sweepers: `NOISY_LOGGERS`); warnings and errors always pass.
- `RedactFilter` (on the handler) masks bearer secrets a URL can carry (an API key, as `?api_key=` on a websocket
  or anywhere as `hrm_…`; the token of a password-reset or invitation link; the password of `user:pass@host`)
  before the line is written: in the message, in every string of the `extra=` values (Celery's `data` carries a
  job's arguments) and in the exception text.
- `adopt_server_loggers` routes uvicorn's own loggers through that handler (the ASGI entry calls it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import UTC, datetime
from typing import Any

from apps.core.context import FIELDS, get_context

# Loggers sampled at LOG_SAMPLE_RATE. Log there for anything that fires every few seconds per process.
NOISY_LOGGERS = ("hermes.probes", "hermes.ws.heartbeat", "hermes.sweeper")

# Attributes every LogRecord has; anything else on a record came from `extra=` or the context filter.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "_hermes_sampled",
    "color_message",  # uvicorn's ANSI-coloured copy of the message template
}


class ContextFilter(logging.Filter):
    """Copies the bound context onto every record so any formatter can use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = get_context()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name, "-"))
        for name, value in context.items():
            if name not in FIELDS and not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "trace_id"):
            record.trace_id = current_trace_id() or "-"
        return True


def current_trace_id() -> str | None:
    """The active OpenTelemetry trace id (hex), or None when no span is recording (tracing off)."""
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*FIELDS, "trace_id"):
            value = getattr(record, name, "-")
            payload[name] = None if value == "-" else value
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and name not in payload:
                payload[name] = value
        if record.exc_info:
            payload["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        # An object extra becomes its text here: masked like every other string of the line.
        return json.dumps(payload, default=lambda value: redact(str(value)))


class SampleFilter(logging.Filter):
    """Keeps a `rate` share of INFO/DEBUG records, evenly spread (every 1/rate-th), never drops WARNING+.

    Deterministic rather than random: a probe every 5 s at rate 0.01 shows up exactly every ~8 minutes.
    """

    def __init__(self, rate: float | None = None) -> None:
        super().__init__()
        if rate is None:
            from django.conf import settings

            rate = float(settings.LOG_SAMPLE_RATE)
        self.rate = max(0.0, min(1.0, rate))
        self._credit = 1.0 - self.rate  # the first record passes: a restarted process says it is being probed
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        # dictConfig appends filters when logging is configured again in the same process, so a logger can carry
        # two samplers: the first decision is the record's decision.
        decided = getattr(record, "_hermes_sampled", None)
        if decided is not None:
            return bool(decided)
        with self._lock:
            self._credit += self.rate
            keep = self._credit >= 1.0
            if keep:
                self._credit -= 1.0
        record._hermes_sampled = keep
        return keep


# What a log line must never carry. An API key (`hrm_` + 43 url-safe characters) keeps what the console's key list
# shows of it (`hrm_abcd…wxyz`), so a line still says which key; a link token only its route.
_API_KEY = re.compile(r"(hrm_[A-Za-z0-9_-]{4})[A-Za-z0-9_-]{8,}([A-Za-z0-9_-]{4})")
_SECRET_PARAM = re.compile(r"([?&](?:api_key|access_token|token)=)(?!hrm_)[^&\s\"']+", re.IGNORECASE)
# (Also percent-encoded, as a `?next=%2Finvitations%2F<token>%2F` parameter carries a link.) Wherever the link's
# path starts: `/invitations/<token>/` alone (a request's path), in a full URL (the mail's link, under any path
# prefix of HERMES_PUBLIC_URL). The other paths that end in `invitations/<segment>` name no secret and stay as they
# are: an id (`/api/v1/invitations/12`, `/org/invitations/12/revoke/`) is digits only, and the API's
# `/api/v1/invitations/accept` is a word of its own.
_LINK_TOKEN = re.compile(
    r"((?:/|%2F)invitations(?:/|%2F)|(?:/|%2F)password-reset(?:/|%2F)[^/\s%]+(?:/|%2F))"
    r"(?!(?:set-password|accept|\d+)(?:[/?&\s\"'%#]|$))[^/?&\s\"'%]+",
    re.IGNORECASE,
)
# The password of a URL's userinfo (`redis://:pw@host`, `http://admin:pw@host/`): the user stays, it says which
# account. Greedy up to the authority's last `@`, so a password with an unencoded `@` is masked whole.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]+@", re.IGNORECASE)
REDACTED = "[redacted]"
# How deep RedactFilter walks an extra's dicts, lists and tuples; anything deeper is masked as its text. Extras are
# flat or nearly so: the bound only keeps a self-referencing structure from recursing forever.
_MAX_DEPTH = 6


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    text = _API_KEY.sub(r"\1…\2", text)
    text = _SECRET_PARAM.sub(rf"\1{REDACTED}", text)
    return _LINK_TOKEN.sub(rf"\1{REDACTED}", text)


def redact_value(value: Any, depth: int = 0) -> Any:
    """`value` with every string in it redacted, in dicts, lists and tuples too. Copies, never changes `value` (an
    extra is often an object the caller keeps using: a job's result, its arguments), and returns `value` itself
    when nothing in it needed masking."""
    if isinstance(value, str):
        return redact(value)
    if not isinstance(value, dict | list | tuple):
        return value  # numbers, None, objects: JsonFormatter masks what it turns into text
    if depth >= _MAX_DEPTH:
        text = str(value)
        masked = redact(text)
        return value if masked == text else masked
    if isinstance(value, dict):
        items = {key: redact_value(item, depth + 1) for key, item in value.items()}
        return value if all(items[key] is item for key, item in value.items()) else items
    masked_items = [redact_value(item, depth + 1) for item in value]
    if all(new is old for new, old in zip(masked_items, value, strict=True)):
        return value
    return tuple(masked_items) if isinstance(value, tuple) else masked_items


_TRACEBACKS = logging.Formatter()  # renders an exception as every formatter would, for RedactFilter to mask


class RedactFilter(logging.Filter):
    """Masks secrets in the message, in every `extra=` value (the request line's `path`, a job's `data`, a
    probe's URL) and in the exception text, leaving the record otherwise as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS:
                clean = redact_value(value)
                if clean is not value:
                    setattr(record, name, clean)
        # Formatters use a record's exc_text once it is set (another handler may have set it already): an error's
        # text can hold the URL it failed on.
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        elif record.exc_info:
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
        return True


class TracebacksOnly(logging.Filter):
    """For django.request: its line for a 4xx or 5xx response repeats hermes.request's (which logs a deliberate 503
    with Retry-After at WARNING, where Django says ERROR); only its tracebacks of unhandled exceptions are news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is not None


def adopt_server_loggers() -> None:
    """Send the lines of the server in front of Django (uvicorn keeps handlers of its own, plain text) through
    Hermes' handler: JSON like every other line, with the request context and RedactFilter — uvicorn logs each
    websocket handshake with its query string, `?api_key=` included."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.handlers and not logger.propagate:
            # `--no-access-log` (make run, the Procfile) leaves it so. uvicorn writes access lines whenever the
            # logger has a handler, its parents' included: propagating would turn them back on, a second line per
            # request beside hermes.request's.
            continue
        logger.handlers.clear()
        logger.propagate = True
