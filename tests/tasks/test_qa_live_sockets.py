"""QA of the live sockets (docs/tasks.md, "Live timeline"): the first socket after a Redis restart, presence that
changes without a join or a leave, a repeated `?after`, and the org socket's timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
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
Frame = dict[str, Any]


@pytest.fixture
def api_key(alice: Any, org: Any) -> str:
    return issue_api_key(alice, org, ["tasks:read"])[1]


async def frames_until(ws: WebsocketCommunicator, done: Callable[[Frame], bool], timeout: float = 3) -> list[Frame]:
    frames: list[Frame] = []
    while not frames or not done(frames[-1]):
        frames.append(await ws.receive_json_from(timeout=timeout))
    return frames


async def open_and_close(path: str) -> None:
    """A socket that comes and goes, so that this process's channel layer holds a connection to Redis."""
    ws = WebsocketCommunicator(APP, path)
    assert (await ws.connect())[0]
    await ws.disconnect()


# --- 1. The first socket after a Redis restart -----------------------------------------------------------------


def test_the_first_org_socket_after_a_redis_restart_gets_live_messages(
    api_key: str, task: Any, embedded_redis: dict[str, Any], settings: Any
) -> None:
    """No socket was open on the process while Redis restarted. The next org socket's subscription failed on the
    layer's dead connection ("Connection lost"), was only logged, and the socket stayed open and silent for good:
    no status change, no 1012 (the console's list said Live while it missed every change)."""
    settings.HERMES_WS_RESYNC_SECONDS = 30  # no probe in this test: the live message itself must come
    path = f"/ws/org/?api_key={api_key}"

    async def scenario() -> None:
        await open_and_close(path)
        embedded_redis["stop"]()
        embedded_redis["start"]()
        ws = WebsocketCommunicator(APP, path)
        assert (await ws.connect())[0]
        await record(task, [Observation(kind="state", data={}, state="working")])
        frame = await ws.receive_json_from(timeout=3)
        assert frame["type"] == "task.status" and frame["task"]["state"] == "working"
        await ws.disconnect()

    async_to_sync(scenario)()


def test_the_first_task_socket_after_a_redis_restart_gets_live_events_and_presence(
    api_key: str, task: Any, embedded_redis: dict[str, Any], settings: Any
) -> None:
    """The same on a task socket: no presence frame ever came, and events only in batches from the database
    resync, for as long as the socket lived."""
    settings.HERMES_WS_RESYNC_SECONDS = 30  # the resync cannot be what delivers the event here
    path = f"/ws/tasks/{task.pk}/?api_key={api_key}"

    async def scenario() -> None:
        await open_and_close(path)
        embedded_redis["stop"]()
        embedded_redis["start"]()
        ws = WebsocketCommunicator(APP, path)
        assert (await ws.connect())[0]
        await frames_until(ws, lambda f: f["type"] == "synced")
        presence = await ws.receive_json_from(timeout=3)
        assert presence["type"] == "presence" and [w["name"] for w in presence["watchers"]]
        await record(task, [Observation(kind="state", data={}, state="working")])
        (event,) = await frames_until(ws, lambda f: f["type"] == "event")
        assert event["event"]["seq"] == task.last_seq + 1
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.fixture
def failing_group_add(monkeypatch: Any) -> list[str]:
    """The layer's group_add raises for task and org groups, as channels-redis' does while Redis is away; the
    socket's own channel and its credential's group subscribe as usual. Yields the groups tried."""
    layer = get_channel_layer()
    real = layer.group_add
    tried: list[str] = []

    async def group_add(group: str, channel: str) -> None:
        if group.startswith(("task.", "org.")):
            tried.append(group)
            raise redis.ConnectionError("Error UNKNOWN while writing to socket. Connection lost.")
        await real(group, channel)

    monkeypatch.setattr(layer, "group_add", group_add)
    return tried


@pytest.mark.parametrize("stream", ["org", "task"])
def test_a_socket_whose_subscription_fails_twice_is_closed_with_1012_once_redis_answers(
    api_key: str, task: Any, failing_group_add: list[str], fast_resync: None, stream: str
) -> None:
    """Redis is up by the time the probe looks, so the socket is told to reconnect onto live messages (the org
    socket's watch counted only a failed probe or a lost subscriber, never a subscription that failed)."""
    path = f"/ws/org/?api_key={api_key}" if stream == "org" else f"/ws/tasks/{task.pk}/?api_key={api_key}"

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, path)
        assert (await ws.connect())[0]
        assert await ws.closed(timeout=3) == (1012, "reconnect")
        await ws.disconnect()

    async_to_sync(scenario)()
    assert len(failing_group_add) == 2  # retried once, at once


def test_a_task_socket_without_its_subscription_follows_the_database_until_the_1012(
    api_key: str, task: Any, failing_group_add: list[str], fast_resync: None, monkeypatch: Any
) -> None:
    async def redis_still_away() -> bool:
        return False

    monkeypatch.setattr("apps.tasks.consumers._redis_is_up", redis_still_away)

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?api_key={api_key}")
        assert (await ws.connect())[0]
        await frames_until(ws, lambda f: f["type"] == "synced")
        await record(task, [Observation(kind="state", data={}, state="working")])
        frames = await frames_until(ws, lambda f: f["type"] == "event")
        assert frames[-1]["event"]["seq"] == task.last_seq + 1
        monkeypatch.undo()
        assert await ws.closed(timeout=3) == (1012, "reconnect")
        await ws.disconnect()

    async_to_sync(scenario)()


# --- 2. Presence that changes without a join or a leave --------------------------------------------------------


def test_a_watcher_of_a_killed_process_is_shown_leaving_once_their_entry_expires(
    api_key: str, task: Any, fast_resync: None
) -> None:
    """A killed process leaves its sockets' entries behind until they expire (presence.WATCH_TTL); nothing
    announced the expiry, so the other watchers showed them until somebody else joined or left (81 s in QA)."""
    from django.conf import settings

    from apps.tasks.presence import _member, _watchers_key

    ghost = {"user_id": -1, "name": "Ghost of a killed process"}
    client = redis.Redis.from_url(settings.REDIS_URL)
    # Its socket refreshed its entry (score: expiry time) 59 s before the process died: it expires in a second.
    client.zadd(_watchers_key(task.pk), {_member("gone.channel", ghost): time.time() + 1})

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?api_key={api_key}")
        assert (await ws.connect())[0]
        frames = await frames_until(ws, lambda f: f["type"] == "presence")
        assert ghost in frames[-1]["watchers"]
        update = await ws.receive_json_from(timeout=3)
        assert update["type"] == "presence" and update["left"] == [ghost] and update["joined"] == []
        assert ghost not in update["watchers"] and update["watchers"]
        assert await ws.receive_nothing(timeout=0.8)  # nothing changed since: no frame at every resync
        await ws.disconnect()

    try:
        async_to_sync(scenario)()
    finally:
        client.delete(_watchers_key(task.pk))
        client.close()


def test_the_agent_answering_during_the_task_is_announced_to_its_watchers(
    api_key: str, task: Any, agent: Any, fast_resync: None
) -> None:
    """A flaky agent was shown offline when the socket opened; the worker then reached it, and the stream kept
    saying `agent_online: false` until the end (only a join or a leave sent presence)."""
    from apps.agents.actions import record_agent_contact

    record_agent_contact(agent, error="connection refused")

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?api_key={api_key}")
        assert (await ws.connect())[0]
        first = (await frames_until(ws, lambda f: f["type"] == "presence"))[-1]
        assert (first["agent_online"], first["agent_contact"]) == (False, "offline")
        assert await ws.receive_nothing(timeout=0.6)  # no change: no frame
        await database_sync_to_async(record_agent_contact)(agent)
        update = await ws.receive_json_from(timeout=3)
        assert update["type"] == "presence"
        assert (update["agent_online"], update["agent_contact"]) == (True, "online")
        assert update["watchers"] == first["watchers"] and update["joined"] == update["left"] == []
        assert await ws.receive_nothing(timeout=0.6)
        await ws.disconnect()

    async_to_sync(scenario)()


# --- 3. `?after` given twice -------------------------------------------------------------------------------------


def test_after_given_twice_closes_the_socket_with_4400_in_the_rest_apis_words(api_key: str, task: Any) -> None:
    """The socket took the first value silently; GET …/events and …/stream answer 400 "Give this parameter once"."""

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?after=3&after=5&api_key={api_key}")
        await ws.connect()
        refused = await ws.receive_json_from()
        assert refused == {
            "type": "refused",
            "code": 4400,
            "reason": "invalid",
            "message": "Give this parameter once (it came 2 times).",
        }
        assert await ws.closed() == (4400, "invalid")

    async_to_sync(scenario)()


# --- 4. The org socket's timestamps ------------------------------------------------------------------------------


def test_the_org_sockets_updated_at_is_written_as_the_rest_api_writes_it(
    api_key: str, org: Any, agent: Any, client: Any
) -> None:
    """`/ws/org/` wrote "+00:00" where GET /api/v1/tasks/<id> writes "Z": a client joining the two found a mismatch."""

    async def scenario() -> Frame:
        ws = WebsocketCommunicator(APP, f"/ws/org/?api_key={api_key}")
        assert (await ws.connect())[0]
        await database_sync_to_async(actions.create_task)(org=org, agent=agent, message=MESSAGE)
        frame: Frame = await ws.receive_json_from(timeout=3)
        await ws.disconnect()
        return frame

    task = async_to_sync(scenario)()["task"]
    rest = client.get(f"/api/v1/tasks/{task['id']}", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert rest.status_code == 200, rest.content
    assert task["updated_at"] == rest.json()["updated_at"]
    assert task["updated_at"].endswith("Z")
