"""Per-request / per-job log context (request_id, org_id, user_id, task_id, job_id; trace_id comes from the span).

contextvars follow the code into `sync_to_async` threads and asyncio tasks. Where the context crosses a process
boundary it is carried explicitly: Celery jobs get it in a message header (apps.core.celery_signals); the
websocket auth middleware (hermes_site/ws_auth.py) calls `bind_scope(scope)` before any consumer runs.

- `bind(**values)`: add to the current context (e.g. `bind(task_id=task.id)` once a task is known).
- `bound(**values)`: the same for a `with` block only.
- `bind_access(access)`: org_id/user_id/api_key_id from an `Access` (done by the API base classes).
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Fields every log line carries (null when unbound). task_id is the Hermes task; job_id the Celery job.
FIELDS = ("request_id", "org_id", "user_id", "task_id", "job_id")
# What travels with a Celery job: everything but the job's own id.
PROPAGATED = ("request_id", "org_id", "user_id", "task_id", "api_key_id")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("hermes_log_context", default=None)
Token = contextvars.Token


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
    token = push(**values)
    try:
        yield
    finally:
        _context.reset(token)


def push(**values: Any) -> Token[dict[str, Any] | None]:
    """Layer values over the current context; `pop(token)` restores exactly what was there (Celery eager jobs
    run inside the request that enqueued them, whose context must survive the job)."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}})


def pop(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


def clear() -> None:
    _context.set({})


def propagated() -> dict[str, Any]:
    current = _context.get() or {}
    return {k: current[k] for k in PROPAGATED if current.get(k) is not None}


def access_values(access: Any) -> dict[str, Any]:
    """org_id/user_id/api_key_id of an `apps.core.permissions.Access` (or nothing for None)."""
    if access is None:
        return {}
    values: dict[str, Any] = {}
    if getattr(access, "org", None) is not None:
        values["org_id"] = access.org.pk
    if getattr(access, "user", None) is not None:
        values["user_id"] = access.user.pk
    if getattr(access, "api_key", None) is not None:
        values["api_key_id"] = access.api_key.pk
    return values


def bind_access(access: Any) -> None:
    bind(**access_values(access))


def bind_scope(scope: dict[str, Any]) -> None:
    """A fresh context from a websocket's scope: the X-Request-ID header when the client sent one, else a new id,
    and the org/user/key of the Access the auth middleware resolved."""
    headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
    incoming = headers.get("x-request-id", "")
    request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else new_request_id()
    values: dict[str, Any] = {"request_id": request_id, **access_values(scope.get("access"))}
    user = scope.get("user")
    if "user_id" not in values and user is not None and getattr(user, "is_authenticated", False):
        values["user_id"] = user.pk
    _context.set({k: v for k, v in values.items() if v is not None})
