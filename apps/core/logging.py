"""JSON log lines (one object per line) carrying the request/job context."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from apps.core.context import FIELDS, get_context


class ContextFilter(logging.Filter):
    """Copies the bound context onto every record so any formatter can use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = get_context()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name, "-"))
        if not hasattr(record, "trace_id"):
            record.trace_id = _current_trace_id()
        return True


def _current_trace_id() -> str:
    try:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else "-"
    except Exception:  # pragma: no cover - tracing is optional at runtime
        return "-"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*FIELDS, "trace_id"):
            value = getattr(record, name, "-")
            payload[name] = None if value == "-" else value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
