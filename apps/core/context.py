"""Per-request / per-job log context (request_id, org_id, user_id, task_id, trace_id).

contextvars follow the code into `sync_to_async` threads and asyncio tasks; Celery jobs and Channels consumers
set them explicitly from the headers/scope they receive.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FIELDS = ("request_id", "org_id", "user_id", "task_id")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("hermes_log_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def get_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def bind(**values: Any) -> None:
    current = dict(_context.get() or {})
    current.update({k: v for k, v in values.items() if v is not None})
    _context.set(current)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def clear() -> None:
    _context.set({})
