"""Channel-layer fan-out of committed task events (best effort: the database is the truth).

A broadcast that fails (Redis down, layer over capacity) is logged and dropped: websocket consumers notice the
gap by sequence number and backfill from the database, and SSE streams read the database anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from channels.layers import get_channel_layer

from apps.tasks.models import Task, TaskEvent

logger = logging.getLogger(__name__)


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def org_group(org_id: Any) -> str:
    return f"org.{org_id}"


def status_message(task: Task) -> dict[str, Any]:
    """What `/ws/org/` subscribers receive when one of the org's tasks changes state."""
    return {
        "type": "task.status",
        "task": {
            "id": str(task.pk),
            "state": task.state,
            "agent_id": str(task.agent_id),
            "last_seq": task.last_seq,
            "updated_at": task.updated_at.isoformat() if task.updated_at else None,
        },
    }


def event_frame(event: dict[str, Any]) -> str:
    """The websocket frame of one timeline event (what `send_json` would produce)."""
    return json.dumps({"type": "event", "event": event})


# Bounded: a hung Redis must not hold the request or job that recorded the events (streams backfill from the DB).
_PUBLISH_TIMEOUT = 2.0
_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """One long-lived event loop per process for publishing from sync code.

    `async_to_sync` from a plain thread builds a fresh loop per call, and channels-redis keeps its Redis
    connections per loop, so every publish paid a new connection (about 4.5 ms of a task submit). Reusing one
    loop keeps them. Keyed by pid: a forked Celery child starts its own.
    """
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="hermes-broadcast", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _run(coro: Coroutine[Any, Any, None]) -> None:
    # Wait on the shared loop: callers keep their publish order and learn whether it worked.
    asyncio.run_coroutine_threadsafe(coro, _publisher_loop()).result(timeout=_PUBLISH_TIMEOUT)


def publish(task: Task, events: Sequence[TaskEvent], *, state_changed: bool) -> bool:
    """Send events to the task's group (and the status to the org's group). Never raises; returns success."""
    layer = get_channel_layer()
    if layer is None:  # pragma: no cover - CHANNEL_LAYERS is always configured
        return False
    messages = []
    for e in events:
        event = e.as_message()
        # Encoded once here rather than once per subscribed socket.
        messages.append((task_group(task.pk), {"type": "task.event", "event": event, "frame": event_frame(event)}))
    if state_changed:
        messages.append((org_group(task.organization_id), status_message(task)))

    async def send_all() -> None:
        for group, message in messages:
            await layer.group_send(group, message)

    try:
        _run(send_all())
    except Exception as exc:
        logger.warning(
            "task %s: broadcast of %d message(s) failed (%s); streams will backfill", task.pk, len(messages), exc
        )
        return False
    return True
