"""`/ws/org/` and the Redis it rides on: status messages have no seq to backfill by, so a socket that may have
missed one is closed with 1012 once Redis is back, and its client re-reads the list (docs/tasks.md)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter

from apps.tasks import actions
from apps.tasks.actions import Observation
from hermes_site.routing import websocket_urlpatterns
from hermes_site.ws_auth import WebSocketAuthMiddleware
from tests.factories import issue_api_key
from tests.tasks.conftest import MESSAGE
from tests.tasks.wsclient import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
APP = WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))
record = database_sync_to_async(actions.record)


@pytest.fixture
def org_path(alice: Any, org: Any) -> str:
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    return f"/ws/org/?api_key={plaintext}"


def test_a_status_change_during_a_redis_outage_closes_the_socket_with_1012_once_redis_is_back(
    org_path: str, org: Any, agent: Any, task: Any, embedded_redis: dict[str, Any], fast_resync: None
) -> None:
    """The socket stayed open and silent: neither an API client nor the console's list learned that the task had
    completed while Redis was down (the list showed "working", Live, after Redis had long been back)."""

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, org_path)
        assert (await ws.connect())[0]
        embedded_redis["stop"]()
        await record(task, [Observation(kind="state", data={}, state="completed")])  # its broadcast fails
        assert await ws.receive_nothing(timeout=1)  # no live messages yet: a reconnect now would gain nothing
        embedded_redis["start"]()
        assert await ws.closed(timeout=5) == (1012, "reconnect")
        await ws.disconnect()
        # The client reconnects (and re-reads the tasks): the new socket is on live messages again.
        again = WebsocketCommunicator(APP, org_path)
        assert (await again.connect())[0]
        follow_up = await database_sync_to_async(actions.create_task)(org=org, agent=agent, message=MESSAGE)
        frame = await again.receive_json_from(timeout=5)
        assert frame["type"] == "task.status" and frame["task"]["id"] == str(follow_up.pk)
        await again.disconnect()

    async_to_sync(scenario)()


def test_a_subscriber_that_lost_redis_between_two_probes_closes_its_org_sockets(
    org_path: str, task: Any, fast_resync: None
) -> None:
    """A Redis restart of a second falls between two probes, which both find Redis up; messages published while
    the subscriber reconnected were lost all the same. channels-redis says so only in its log."""

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, org_path)
        assert (await ws.connect())[0]
        assert await ws.receive_nothing(timeout=0.6)  # Redis up, nothing lost: the socket stays
        try:
            raise redis.ConnectionError("Connection closed by server.")
        except redis.ConnectionError:
            logging.getLogger("channels_redis.pubsub").exception("Unexpected exception in receive task")
        assert await ws.closed(timeout=3) == (1012, "reconnect")
        await ws.disconnect()

    async_to_sync(scenario)()
