"""The task and org websockets through the real auth middleware, the Redis channel layer and Postgres."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.routing import URLRouter
from django.db import OperationalError
from django.test import Client

from apps.tasks import actions, broadcast, consumers
from apps.tasks.actions import Observation
from hermes_site.routing import websocket_urlpatterns
from hermes_site.ws_auth import OriginCheckUnlessAPIKey, WebSocketAuthMiddleware
from tests.factories import issue_api_key
from tests.tasks.conftest import MESSAGE, make_agent
from tests.tasks.wsclient import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
APP = WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))  # as in hermes_site.asgi, minus the Origin check


def cookie_for(user: Any) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


_cookies: dict[Any, list[tuple[bytes, bytes]]] = {}


def communicator(path: str, user: Any | None) -> WebsocketCommunicator:
    # Sessions are created by the sync `login` fixture below; here we only look the cookie up.
    return WebsocketCommunicator(APP, path, headers=_cookies[user.pk] if user else [])


@pytest.fixture(autouse=True)
def login(request: Any) -> None:
    _cookies.clear()
    for name in ("alice", "bob", "charlie"):
        if name in request.fixturenames:
            user = request.getfixturevalue(name)
            _cookies[user.pk] = cookie_for(user)


Frames = list[dict[str, Any]]


async def receive_until(
    ws: WebsocketCommunicator, done: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> Frames:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json_from(timeout=timeout)
            frames.append(frame)
            if done(frame):
                return frames


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["event"]["seq"] for f in frames if f["type"] == "event"]


def is_event(seq: int) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "event" and f["event"]["seq"] == seq


record = database_sync_to_async(actions.record)


def test_backfill_then_live_in_order(alice: Any, task: Any) -> None:
    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", alice)
        connected, _ = await ws.connect()
        assert connected
        frames = await receive_until(ws, lambda f: f["type"] == "synced")
        assert seqs(frames) == [1, 2] and frames[-1] == {"type": "synced", "last_seq": 2, "state": "submitted"}
        await record(task, [Observation(kind="state", data={}, state="working")])
        await record(task, [Observation(kind="artifact", data={"parts": [{"kind": "text", "text": "out"}]})])
        live = await receive_until(ws, is_event(4))
        events = [f["event"] for f in live if f["type"] == "event"]
        assert [(e["seq"], e["kind"]) for e in events] == [(3, "state"), (4, "artifact")]
        assert events[0]["data"] == {"from": "submitted", "to": "working"}
        await ws.disconnect()

    async_to_sync(scenario)()


def test_after_skips_seen_events(alice: Any, task: Any) -> None:
    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/?after=1", alice)
        await ws.connect()
        frames = await receive_until(ws, lambda f: f["type"] == "synced")
        assert seqs(frames) == [2]
        await ws.disconnect()

    async_to_sync(scenario)()


def test_after_past_the_tasks_last_event_is_clamped_to_it(alice: Any, task: Any) -> None:
    # ?after=7 on a task at seq 2: `synced` used to echo 7 as last_seq, and the events 3 to 7 were then dropped
    # as already sent when they came.
    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/?after=7", alice)
        await ws.connect()
        frames = await receive_until(ws, lambda f: f["type"] == "synced")
        assert frames == [{"type": "synced", "last_seq": 2, "state": "submitted"}]
        await record(task, [Observation(kind="state", data={}, state="working")])
        live = await receive_until(ws, is_event(3))
        assert seqs(live) == [3]
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/ws/tasks/{task}/?after=abc", 4400),
        ("/ws/tasks/{task}/?after=-1", 4400),
        ("/ws/tasks/not-a-uuid/", 4404),
        ("/ws/nothing/", 4404),
    ],
)
def test_bad_paths_and_cursors_close_with_a_code(alice: Any, task: Any, path: str, code: int) -> None:
    async def scenario() -> None:
        ws = communicator(path.format(task=task.pk), alice)
        connected, close_code = await ws.connect()
        assert not connected and close_code == code

    async_to_sync(scenario)()


class UnreachableLayer:
    """A channel layer whose Redis is down: every call fails, as channels-redis' do then."""

    extensions: list[str] = []
    calls = 0

    def __init__(self, **_: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            UnreachableLayer.calls += 1
            raise ConnectionRefusedError(f"{name}: Redis is down")

        return fail


@pytest.mark.parametrize("path", ["/ws/nothing/", "/ws/tasks/not-a-uuid/"])
def test_an_unknown_path_closes_with_4404_while_redis_is_down(alice: Any, settings: Any, path: str) -> None:
    """Channels subscribed even these sockets on the channel layer: with Redis down they were an HTTP 500 while task
    sockets were served. A socket that only closes needs no layer."""
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "default": {"BACKEND": f"{__name__}.UnreachableLayer"},
    }
    channel_layers.backends.clear()
    UnreachableLayer.calls = 0
    try:

        async def scenario() -> None:
            assert await communicator(path, alice).connect() == (False, 4404)

        async_to_sync(scenario)()
    finally:
        channel_layers.backends.clear()
    assert UnreachableLayer.calls == 0


def test_a_cursor_of_thousands_of_digits_reads_as_past_the_end(alice: Any, task: Any) -> None:
    """int() of 4,301 digits raises: the handshake was an HTTP 500. It is a cursor past every event now."""

    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/?after={'9' * 5000}", alice)
        connected, _ = await ws.connect()
        assert connected
        (synced,) = await receive_until(ws, lambda f: f["type"] == "synced")
        assert synced["last_seq"] == task.last_seq
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("fails", ["apps.orgs.selectors.session_access", "apps.tasks.consumers.task_for_org"])
def test_a_dead_database_closes_the_socket_with_1013(alice: Any, task: Any, monkeypatch: Any, fails: str) -> None:
    """Reading the socket's access (auth middleware) or its task (consumer) fails as with Postgres gone: the
    socket is closed with 1013 "try again later" (the console reconnects), not failed at the handshake."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr(fails, refuse)

    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", alice)
        connected, close_code = await ws.connect()
        assert not connected and close_code == 1013

    async_to_sync(scenario)()


@pytest.mark.parametrize(("who", "code"), [("charlie", 4404), ("anonymous", 4401)])
def test_other_org_and_anonymous_are_refused(request: Any, task: Any, who: str, code: int) -> None:
    user = request.getfixturevalue(who) if who != "anonymous" else None
    if user is not None:
        _cookies[user.pk] = cookie_for(user)

    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", user)
        connected, close_code = await ws.connect()
        assert not connected and close_code == code

    async_to_sync(scenario)()


def test_origin_is_checked_for_cookies_not_for_api_keys(org: Any, alice: Any, task: Any) -> None:
    """The production stack (hermes_site.asgi): another site's page cannot ride on the visitor's session cookie,
    while a script with an API key (no Origin header at all) connects."""
    production = OriginCheckUnlessAPIKey(APP)
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    path = f"/ws/tasks/{task.pk}/"
    own, foreign = (b"origin", b"http://testserver"), (b"origin", b"https://evil.example")

    async def outcome(query: str, headers: list[tuple[bytes, bytes]]) -> bool:
        ws = WebsocketCommunicator(production, path + query, headers=headers)
        connected, _code = await ws.connect()
        if connected:
            assert (await ws.receive_json_from())["type"] == "event"
            await ws.disconnect()
        return connected

    async def scenario() -> None:
        cookie = _cookies[alice.pk]
        assert await outcome("", [*cookie, own])
        assert not await outcome("", [*cookie, foreign])
        assert not await outcome("", cookie)  # no Origin: not a browser, so no cookie either
        without_origin = WebsocketCommunicator(production, path, headers=cookie)
        assert await without_origin.connect() == (False, 4401)  # told why, not a bare HTTP 403
        assert await outcome(f"?api_key={plaintext}", [])
        assert await outcome("", [(b"authorization", f"Bearer {plaintext}".encode())])
        assert await outcome(f"?api_key={plaintext}", [*cookie, foreign])  # the key's own access, not the cookie's
        # As Django's CSRF check: the Origin's port counts (cookies do not keep to a port; ALLOWED_HOSTS names hosts).
        host = (b"host", b"testserver:8000")
        assert await outcome("", [*cookie, host, (b"origin", b"http://testserver:8000")])
        assert not await outcome("", [*cookie, host, (b"origin", b"http://testserver:9999")])
        assert not await outcome("", [*cookie, host, (b"origin", b"http://testserver")])
        assert await outcome("", [*cookie, (b"host", b"testserver"), (b"origin", b"http://testserver:80")])
        # ... and the scheme: an http:// page may not open the https site's socket (behind a TLS proxy, which says
        # so with X-Forwarded-Proto as for Django's own check).
        tls = [(b"host", b"testserver"), (b"x-forwarded-proto", b"https")]
        assert await outcome("", [*cookie, *tls, (b"origin", b"https://testserver")])
        assert not await outcome("", [*cookie, *tls, (b"origin", b"http://testserver")])
        assert not await outcome("", [*cookie, (b"host", b"testserver"), (b"origin", b"https://testserver")])

    async_to_sync(scenario)()


def test_dropped_message_is_backfilled_from_the_database(
    alice: Any, task: Any, monkeypatch: Any, fast_resync: None
) -> None:
    real_publish = broadcast.publish
    dropped: list[int] = []

    def lossy_publish(t: Any, events: Any, *, state_changed: bool) -> bool:
        # Simulate channels-redis dropping messages past capacity: seq 3 and the final seq 6 never arrive live.
        kept = [e for e in events if e.seq not in (3, 6)]
        dropped.extend(e.seq for e in events if e.seq in (3, 6))
        return real_publish(t, kept, state_changed=state_changed) if kept else False

    monkeypatch.setattr(broadcast, "publish", lossy_publish)

    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", alice)
        await ws.connect()
        await receive_until(ws, lambda f: f["type"] == "synced")
        for n in range(3):
            await record(task, [Observation(kind="progress", data={"n": n})])
        frames = await receive_until(ws, is_event(5))
        assert seqs(frames) == [3, 4, 5]  # 4 arrived live, revealed the gap; 3 came from the database
        await record(task, [Observation(kind="state", data={}, state="completed")])
        # Nothing follows seq 6 to reveal its loss: the periodic resync finds it.
        frames = await receive_until(ws, is_event(6))
        assert seqs(frames) == [6]
        await ws.disconnect()

    async_to_sync(scenario)()
    assert dropped == [3, 6]


def test_the_resync_rides_out_a_database_outage(
    alice: Any, task: Any, monkeypatch: Any, fast_resync: None, caplog: Any
) -> None:
    """Live messages are lost and the first resync reads fail as with Postgres gone: each failure is one warning
    line, and a later resync still delivers the event."""
    from apps.tasks import consumers

    real_progress = consumers.task_progress
    failures = [OperationalError("connection to server failed: Connection refused")] * 2

    def flaky_progress(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_progress(*args)

    monkeypatch.setattr(consumers, "task_progress", flaky_progress)
    monkeypatch.setattr(broadcast, "publish", lambda *args, **kwargs: False)

    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", alice)
        await ws.connect()
        await receive_until(ws, lambda f: f["type"] == "synced")
        await record(task, [Observation(kind="progress", data={"n": 1})])
        assert seqs(await receive_until(ws, is_event(3), timeout=10)) == [3]
        await ws.disconnect()

    async_to_sync(scenario)()
    assert not failures  # both outage reads happened before the delivery
    skipped = [r for r in caplog.records if "resync skipped, database error" in r.getMessage()]
    assert len(skipped) >= 1 and all(r.levelname == "WARNING" and not r.exc_info for r in skipped)
    assert not [r for r in caplog.records if "resync failed" in r.getMessage()]


def test_presence_joins_and_leaves(alice: Any, bob: Any, task: Any) -> None:
    def presence(f: dict[str, Any]) -> bool:
        return f["type"] == "presence"

    async def scenario() -> None:
        first = communicator(f"/ws/tasks/{task.pk}/", alice)
        await first.connect()
        frames = await receive_until(first, presence)
        assert [w["name"] for w in frames[-1]["watchers"]] == [alice.name]
        assert [w["user_id"] for w in frames[-1]["joined"]] == [alice.pk] and frames[-1]["left"] == []
        assert frames[-1]["agent_online"] is None  # not contacted yet (the badge's words), not "offline"
        assert frames[-1]["agent_contact"] == "never"
        second = communicator(f"/ws/tasks/{task.pk}/", bob)
        await second.connect()
        joined = (await receive_until(first, presence))[-1]
        assert [w["user_id"] for w in joined["joined"]] == [bob.pk]
        assert sorted(w["user_id"] for w in joined["watchers"]) == sorted([alice.pk, bob.pk])
        await second.disconnect()
        left = (await receive_until(first, presence))[-1]
        assert [w["user_id"] for w in left["left"]] == [bob.pk] and left["joined"] == []
        assert [w["user_id"] for w in left["watchers"]] == [alice.pk]
        await first.disconnect()

    async_to_sync(scenario)()


def test_another_tab_of_a_watcher_sends_no_presence_frame(alice: Any, bob: Any, task: Any) -> None:
    """Watchers are one entry per person: alice opening and closing a second tab changes nothing bob sees, and bob
    got a frame with joined: [], left: [] and the same watchers each time."""

    def presence(f: dict[str, Any]) -> bool:
        return f["type"] == "presence"

    async def scenario() -> None:
        watcher = communicator(f"/ws/tasks/{task.pk}/", bob)
        await watcher.connect()
        await receive_until(watcher, presence)
        first = communicator(f"/ws/tasks/{task.pk}/", alice)
        await first.connect()
        joined = (await receive_until(watcher, presence))[-1]
        assert [w["user_id"] for w in joined["joined"]] == [alice.pk]
        await receive_until(first, presence)
        second = communicator(f"/ws/tasks/{task.pk}/", alice)
        await second.connect()
        # The new socket learns who watches (its first presence), the others hear nothing.
        own = (await receive_until(second, presence))[-1]
        assert sorted(w["user_id"] for w in own["watchers"]) == sorted([alice.pk, bob.pk])
        assert await watcher.receive_nothing(timeout=1) and await first.receive_nothing(timeout=0.1)
        await second.disconnect()
        assert await watcher.receive_nothing(timeout=1) and await first.receive_nothing(timeout=0.1)
        await first.disconnect()
        left = (await receive_until(watcher, presence))[-1]
        assert [w["user_id"] for w in left["left"]] == [alice.pk] and left["joined"] == []
        await watcher.disconnect()

    async_to_sync(scenario)()


def test_org_socket_gets_status_changes_of_its_org_only(alice: Any, charlie: Any, org: Any, other_org: Any) -> None:
    agent = make_agent(org)
    theirs = make_agent(other_org, "theirs")

    async def scenario() -> None:
        ws = communicator("/ws/org/", alice)
        connected, _ = await ws.connect()
        assert connected
        await database_sync_to_async(actions.create_task)(org=other_org, agent=theirs, message=MESSAGE)
        task = await database_sync_to_async(actions.create_task)(org=org, agent=agent, message=MESSAGE)
        frame = await ws.receive_json_from(timeout=5)
        assert frame["type"] == "task.status" and frame["task"]["id"] == str(task.pk)
        assert frame["task"]["state"] == "submitted"
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        anonymous = communicator("/ws/org/", None)
        assert (await anonymous.connect()) == (False, 4401)

    async_to_sync(scenario)()


def test_redis_outage_events_persist_and_the_stream_catches_up(
    alice: Any, task: Any, embedded_redis: dict[str, Any], fast_resync: None
) -> None:
    async def scenario() -> None:
        ws = communicator(f"/ws/tasks/{task.pk}/", alice)
        await ws.connect()
        await receive_until(ws, lambda f: f["type"] == "synced")
        embedded_redis["stop"]()
        # A socket opened during the outage is served too (from the database), not refused with a 500.
        late = communicator(f"/ws/tasks/{task.pk}/", alice)
        connected, _code = await late.connect()
        assert connected
        assert seqs(await receive_until(late, lambda f: f["type"] == "synced")) == [1, 2]
        # Redis is gone: recording still works (the broadcast failure is logged, not raised).
        await record(task, [Observation(kind="state", data={}, state="working")])
        await record(task, [Observation(kind="progress", data={"n": 1})])
        frames = await receive_until(ws, is_event(4))
        assert seqs(frames) == [3, 4]
        assert seqs(await receive_until(late, is_event(4))) == [3, 4]
        await late.disconnect()
        embedded_redis["start"]()
        await record(task, [Observation(kind="state", data={}, state="completed")])
        frames = await receive_until(ws, is_event(5))
        assert seqs(frames) == [5]
        await ws.disconnect()

    async_to_sync(scenario)()


def test_a_socket_opened_while_redis_hangs_is_served_from_the_database(
    alice: Any, task: Any, settings: Any, tmp_path: Any, fast_resync: None
) -> None:
    """Channels subscribes a socket's channel on Redis before any handler runs; a Redis that hangs made that a 500
    at the handshake. The socket is served on an in-process layer instead and follows the database."""
    from hermes_site.embedded import start_redis, stop_redis

    url, proc = start_redis(directory=tmp_path)
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url]}},
    }
    channel_layers.backends.clear()
    os.kill(proc.pid, signal.SIGSTOP)
    try:

        async def scenario() -> None:
            ws = communicator(f"/ws/tasks/{task.pk}/", alice)
            connected, _code = await ws.connect(timeout=20)
            assert connected
            assert seqs(await receive_until(ws, lambda f: f["type"] == "synced", timeout=20)) == [1, 2]
            await record(task, [Observation(kind="progress", data={"n": 1})])  # its broadcast times out
            assert seqs(await receive_until(ws, is_event(3), timeout=20)) == [3]  # the resync brings it
            # Once Redis answers again the socket is told to reconnect (1012)...
            os.kill(proc.pid, signal.SIGCONT)
            while (output := await ws.receive_output(timeout=10))["type"] != "websocket.close":
                assert output["type"] == "websocket.send"
            assert output["code"] == 1012
            await ws.wait()
            # ... and the new socket gets live messages (a 30 s resync could not deliver within the wait below).
            settings.HERMES_WS_RESYNC_SECONDS = 30
            again = communicator(f"/ws/tasks/{task.pk}/?after=3", alice)
            assert (await again.connect())[0]
            await receive_until(again, lambda f: f["type"] == "synced")
            await record(task, [Observation(kind="progress", data={"n": 2})])
            assert seqs(await receive_until(again, is_event(4), timeout=3)) == [4]
            await again.disconnect()

        async_to_sync(scenario)()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop_redis(proc, directory=tmp_path)
        channel_layers.backends.clear()


def test_publish_from_sync_code_reaches_the_layers_group_subscribers(task: Any) -> None:
    """broadcast.publish writes to Redis itself (no event loop): what it sends must be exactly what the channel
    layer's subscribers in the websocket process receive, on the task's and the org's group."""
    from channels.layers import get_channel_layer

    event = task.events.order_by("seq").last()

    async def scenario() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(broadcast.task_group(task.pk), channel)
        await layer.group_add(broadcast.org_group(task.organization_id), channel)
        assert await asyncio.to_thread(broadcast.publish, task, [event], state_changed=True)
        first = await asyncio.wait_for(layer.receive(channel), timeout=5)
        second = await asyncio.wait_for(layer.receive(channel), timeout=5)
        assert first["type"] == "task.event" and first["event"] == event.as_message()
        assert first["frame"] == broadcast.event_frame(event.as_message())
        assert second == broadcast.status_message(task)
        await layer.flush()

    async_to_sync(scenario)()


def test_a_redis_outage_is_logged_once_by_the_publisher_and_once_more_when_it_ends(
    task: Any, settings: Any, caplog: Any
) -> None:
    """One warning per event (155 lines in 12 s for one task) became one for the outage and one for its end."""
    event = task.events.order_by("seq").last()
    assert broadcast.publish(task, [event], state_changed=True)  # ends whatever outage earlier tests left
    caplog.clear()
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "default": {**layer, "CONFIG": {**layer.get("CONFIG", {}), "hosts": ["redis://127.0.0.1:1/0"]}},
    }
    channel_layers.backends.clear()
    caplog.set_level("DEBUG", logger="apps.tasks.broadcast")
    try:
        for _ in range(5):
            assert not broadcast.publish(task, [event], state_changed=True)
    finally:
        settings.CHANNEL_LAYERS = {**settings.CHANNEL_LAYERS, "default": layer}
        channel_layers.backends.clear()
    assert broadcast.publish(task, [event], state_changed=True)
    assert broadcast.publish(task, [event], state_changed=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("broadcasts failing (ConnectionError")
    assert "10 message(s) were not sent" in warnings[1]


def test_a_subscriber_without_redis_logs_one_warning_not_a_traceback_a_second(caplog: Any, monkeypatch: Any) -> None:
    """channels-redis logs its lost connection with a traceback every second while Redis is away."""
    monkeypatch.setattr(consumers._SUBSCRIBER_LOSSES, "last", None)  # no outage going on (earlier tests had some)
    pubsub = logging.getLogger("channels_redis.pubsub")
    for _ in range(3):
        try:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except redis.ConnectionError:
            pubsub.exception("Unexpected exception in receive task")
    try:
        raise KeyError("something else")
    except KeyError:
        pubsub.exception("Unexpected exception in receive task")  # not an outage: as channels-redis logs it
    records = [r for r in caplog.records if r.name == "channels_redis.pubsub"]
    assert [(r.levelname, bool(r.exc_info)) for r in records] == [("WARNING", False), ("ERROR", True)]
    assert records[0].getMessage().startswith("channel layer lost Redis (ConnectionError")
