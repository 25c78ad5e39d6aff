"""Channel-layer fan-out of committed task events (best effort: the database is the truth).

A broadcast that fails (Redis down, layer over capacity) is dropped: websocket consumers notice the gap by
sequence number and backfill from the database, org sockets are told to reconnect once Redis is back
(apps.tasks.consumers), and SSE streams read the database anyway. An outage is logged when it starts and ends.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import _consistent_hash, decode_hosts
from django.conf import settings
from rest_framework.fields import DateTimeField

from apps.tasks.models import Task, TaskEvent

logger = logging.getLogger(__name__)


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def org_group(org_id: Any) -> str:
    return f"org.{org_id}"


# The REST API's way of writing a time (DRF's: UTC as `Z`, as TaskEvent.as_message does), so that a client can
# compare the socket's `updated_at` with the one GET /api/v1/tasks/<id> wrote (isoformat() writes `+00:00`).
_REST_DATETIME = DateTimeField()


def status_message(task: Task) -> dict[str, Any]:
    """What `/ws/org/` subscribers receive when one of the org's tasks changes state."""
    return {
        "type": "task.status",
        "task": {
            "id": str(task.pk),
            "state": task.state,
            "agent_id": str(task.agent_id),
            "last_seq": task.last_seq,
            "updated_at": _REST_DATETIME.to_representation(task.updated_at) if task.updated_at else None,
        },
    }


def event_frame(event: dict[str, Any]) -> str:
    """The websocket frame of one timeline event (what `send_json` would produce)."""
    return json.dumps({"type": "event", "event": event})


# Bounded: a hung Redis must not hold the request or job that recorded the events (streams backfill from the DB).
_PUBLISH_TIMEOUT = 2.0
_clients_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def _group_sender(layer: Any) -> Callable[[str, dict[str, Any]], None]:
    """`group_send` for sync code (requests, Celery jobs), without an event loop.

    With the Redis pub/sub layer a group send is one PUBLISH of the layer's own serialization on the group's
    channel, so it is done here with a plain Redis client. The async `group_send` from sync code had to hop to
    an event loop thread and back for every publish; under load those two GIL hand-offs per request cost more
    than the PUBLISH (measured with `python -m bench.tasks --ablation`). Any other layer gets `async_to_sync`.
    """
    if not isinstance(layer, RedisPubSubChannelLayer):
        return async_to_sync(layer.group_send)  # pragma: no cover - Hermes configures the pub/sub layer
    config = settings.CHANNEL_LAYERS[DEFAULT_CHANNEL_LAYER].get("CONFIG", {})  # what the layer was built from
    prefix = config.get("prefix", "asgi")
    hosts = decode_hosts(config.get("hosts"))

    def send(group: str, message: dict[str, Any]) -> None:
        # The channel and shard the layer's subscribers listen on (RedisPubSubLoopLayer.group_send).
        channel = f"{prefix}__group__{group}"
        _client(hosts[_consistent_hash(channel, len(hosts))]).publish(channel, layer.serialize(message))

    return send


def _client(host: dict[str, Any]) -> redis.Redis:
    key = (os.getpid(), repr(sorted(host.items())))  # a forked Celery child opens its own connections
    with _clients_lock:
        if key not in _clients:
            options = {k: v for k, v in host.items() if k != "address"}
            options.setdefault("socket_connect_timeout", _PUBLISH_TIMEOUT)
            options.setdefault("socket_timeout", _PUBLISH_TIMEOUT)
            address = host.get("address")
            _clients[key] = redis.Redis.from_url(address, **options) if address else redis.Redis(**options)
        return _clients[key]


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

    try:
        send = _group_sender(layer)
        for group, message in messages:
            send(group, message)
    except Exception as exc:
        _OUTAGE.failed(task.pk, len(messages), exc)
        return False
    _OUTAGE.succeeded()
    return True


class _BroadcastOutage:
    """This process's broadcasts while the channel layer's Redis is unreachable: logged when they start failing
    and when they succeed again, not once per event (a busy task records several events a second, and every one
    of them failed the same way: 155 warnings in 12 s). The failures in between are counted, and the count is in
    the recovery's line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # request threads and Celery threads publish concurrently
        self.since: float | None = None  # monotonic time of the first failure of the current outage
        self.lost = 0  # messages not sent since then

    def failed(self, task_id: Any, messages: int, exc: Exception) -> None:
        with self._lock:
            first = self.since is None
            if first:
                self.since = time.monotonic()
            self.lost += messages
        if first:
            logger.warning(
                "broadcasts failing (%s: %s); streams will backfill from the database. Further failures are "
                "counted, not logged, until a broadcast succeeds again",
                exc.__class__.__name__,
                exc,
            )
        else:
            logger.debug("task %s: broadcast of %d message(s) failed (%s)", task_id, messages, exc)

    def succeeded(self) -> None:
        if self.since is None:  # the usual case: no lock taken on the hot path
            return
        with self._lock:
            since, lost = self.since, self.lost
            self.since, self.lost = None, 0
        if since is not None:
            logger.warning(
                "broadcasts succeed again after %.1f s; %d message(s) were not sent meanwhile",
                time.monotonic() - since,
                lost,
            )


_OUTAGE = _BroadcastOutage()
