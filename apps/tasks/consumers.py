"""Live task timelines over WebSockets.

`/ws/tasks/<id>/`: on connect the socket receives every event after `?after=<seq>` (default: all), then every new
event live — in order, without gaps or duplicates. Live events come through the channel layer, which may drop
messages (channels-redis drops past a channel's capacity) or lose them while Redis is down; each event carries its
per-task `seq`, so a consumer that sees seq N+2 after N backfills N+1.. from the database, and a periodic resync
(HERMES_WS_RESYNC_SECONDS, only while no live event arrives, and read once per task per process however many
sockets watch it) catches a dropped *last* event. Sends are serialized by a lock so the live path and the backfill
path never interleave.

Messages sent to clients (JSON):
- `{"type": "event", "event": {"task_id", "seq", "kind", "data", "created_at"}}`
- `{"type": "synced", "last_seq": N, "state": "..."}` once the initial backfill is sent
- `{"type": "presence", "watchers": [{"user_id", "name"}], "agent_online": bool, "agent_contact": str, "joined":
  [...], "left": [...]}` (`agent_contact`: `online`, `offline`, `idle` — reached without error, not lately — or
  `never`, as the agent badge says; `agent_online` true/false for the first two, else null) when people open or
  close the task (joined/left relative to the last presence this socket received; changes within a short window
  are announced together)
- `{"type": "refused", "code": 4409, "reason": "org_switched", "message": "..."}` just before a 4409 close: the
  close explained for a person (which org the session is in now, and how to switch back); before a 4400 `invalid`
  too when `?after` came more than once, in the REST API's words

`/ws/org/`: `{"type": "task.status", "task": {"id", "state", "agent_id", "last_seq", "updated_at"}}` for every state
change of the org's tasks. These come only live (there is no seq to backfill by): when live messages may have been
lost — Redis was seen down, this process's subscriber lost its connection, or the socket's subscription failed — the
socket is closed with 1012 `reconnect` once Redis answers again, and the client re-reads the list (GET
/api/v1/tasks; the console re-fetches its list) after reconnecting. The socket subscribes before it is accepted, so
a re-read made once it is open misses nothing.

Close codes, each with a short reason: 4400 `invalid` (`?after` is not a non-negative integer, or came twice), 4401
not signed in, or no longer — the reason says why: `not_authenticated`, the API key's error code (`key_revoked`,
`key_expired`, `key_unknown`, `key_malformed`, `key_creator_gone`) or `signed_out` —, 4403 `missing_scope`
(`tasks:read`), 4404 `not_found` (no such task in the caller's org, or no such socket path), 4409 `org_switched` (a
signed-in person's task in another of their orgs than the session's: they switched org in another tab since the page
was opened; an API key, or someone outside that org, gets 4404 as for any missing task), 1013 the database is
unreachable: retry later (hermes_site.ws_auth.DatabaseUnavailableGuard), 1012 `reconnect`: the socket was opened
while Redis was out (or could not subscribe to its live messages) and followed the database, or (`/ws/org/`) live
messages may have been lost while Redis was away; live messages are back (reconnect with `?after=<last seq>` to miss
nothing; on `/ws/org/` re-read the tasks).

A socket lives only as long as its credential authenticates (apps.orgs.auth, "Long-lived streams"): it joins the
channel-layer group of its API key or session, where revocation, rotation and sign-out are announced; it closes
at its key's expiry by a timer; and every HERMES_WS_RESYNC_SECONDS it re-checks the credential (one shared read
per credential per process) in case an announcement was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

import redis
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from apps.core.checks import probe_redis
from apps.core.errors import HermesAPIError, whole_number
from apps.core.metrics import WEBSOCKET_CONNECTIONS
from apps.core.permissions import Access
from apps.orgs.auth import LEFT_ORG, StreamCredential
from apps.orgs.models import Organization
from apps.orgs.selectors import other_org_holding
from apps.tasks.broadcast import event_frame, org_group, task_group
from apps.tasks.models import TERMINAL_STATES
from apps.tasks.presence import ANNOUNCE_WINDOW_MS, Presence
from apps.tasks.selectors import agent_contact, event_messages_after, task_for_org, task_progress

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409  # the HTTP twin is the console's 409 `org_switched` (apps.orgs.decorators)
CLOSE_RECONNECT = 1012  # RFC 6455 "service restart": the client should reconnect

# (code, reason): the reason is a short error code, so clients can tell closes with the same code apart (RFC 6455
# allows 123 bytes of UTF-8).
Close = tuple[int, str]
BAD_AFTER: Close = (CLOSE_BAD_REQUEST, "invalid")
NOT_FOUND: Close = (CLOSE_NOT_FOUND, "not_found")
ORG_SWITCHED: Close = (CLOSE_CONFLICT, "org_switched")


def _access_for(scope: dict[str, Any]) -> Access | Close:
    access = scope.get("access")
    if not isinstance(access, Access):
        # The middleware's error code for a bad key (key_revoked, ...) tells it apart from no credentials at all;
        # signed in but in no organization is no authentication problem (4401 says "sign in").
        error = scope.get("auth_error") or "not_authenticated"
        return (CLOSE_FORBIDDEN if error == "no_organization" else CLOSE_UNAUTHENTICATED), error
    if not access.allows("tasks:read"):
        return CLOSE_FORBIDDEN, "missing_scope"
    return access


def _db(fn: Any) -> Any:
    """database_sync_to_async that also hands the connection back (consumers live long; threads are pooled)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return database_sync_to_async(wrapped)


# An in-process layer (settings.CHANNEL_LAYERS) for sockets opened while Redis is unreachable.
DEGRADED_LAYER = "degraded"


class _ConsumerBase:
    """Channels >= 4.2 runs `close_old_connections` in a worker thread before *every* handler call. With 500
    sockets on a task that is 500 thread hops per event — a quarter of the fan-out's CPU. These consumers touch
    the database only through `_db`, which cleans up itself, so the per-message hop is skipped.

    Also: Channels subscribes the socket's own channel (on Redis) before any handler runs, so with Redis down or
    hanging the handshake failed with an HTTP 500. Such a socket is served anyway, on an in-process layer: it gets
    no live messages and follows the database instead (the periodic resync). Once Redis answers again it is closed
    with 1012, so that the client reconnects onto live messages (the console does so by itself)."""

    channel_layer_alias: str
    channel_layer: Any
    channel_name: str
    scope: dict[str, Any]
    base_send: Callable[[dict[str, Any]], Awaitable[None]]
    credential: StreamCredential | None = None
    credential_watch: asyncio.Task[None] | None = None
    layer_watch: asyncio.Task[None] | None = None  # waits for Redis, then closes the socket with 1012
    closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        except Exception as exc:
            if getattr(self, "channel_name", None) or self.channel_layer_alias == DEGRADED_LAYER:
                raise  # not the subscription that failed
            logger.warning("channel layer unavailable (%s); the socket follows the database", exc.__class__.__name__)
            self.channel_layer_alias = DEGRADED_LAYER
            watch = asyncio.create_task(self._await_live_layer())
            try:
                await super().__call__(scope, receive, send)  # type: ignore[misc]
            finally:
                watch.cancel()
        finally:
            # `disconnect` is not called when a handler raised (the database went away in `connect`, say): the
            # socket's background tasks must not outlive it.
            await self.stop_background_work()

    async def _await_live_layer(self) -> None:
        interval = settings.HERMES_WS_RESYNC_SECONDS
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            if await _shared_read(_REDIS_UP, interval / 2, _redis_is_up):
                break
        if self.channel_layer_alias != DEGRADED_LAYER:
            # A group subscription on Redis failed (`join_group`): the socket's own channel there may be as lost.
            await self.close_from_server(CLOSE_RECONNECT, "reconnect")
            return
        # Through the socket's own channel, so the close is handled between two messages, never inside one.
        await self.channel_layer.send(self.channel_name, {"type": "hermes.layer_back"})

    async def hermes_layer_back(self, message: dict[str, Any]) -> None:
        await self.close_from_server(CLOSE_RECONNECT, "reconnect")

    async def close_from_server(self, code: int, reason: str) -> None:
        """Close the socket, from a handler or from a background task, once.

        Nothing may be sent after the close frame (uvicorn raises, and the consumer would die with a traceback),
        yet until the client's disconnect arrives the socket still receives channel-layer messages, and a handler
        or the resync may be half-way through a backfill: from here on they send into the void."""
        if self.closing:
            return
        self.closing = True
        send, self.base_send = self.base_send, _discard
        await send({"type": "websocket.close", "code": code, "reason": reason})
        await self.stop_background_work()

    async def stop_background_work(self) -> None:
        """Stop whatever sends to the socket outside the message loop (before a close from the server)."""
        await _cancel(self.credential_watch)
        await _cancel(self.layer_watch)

    async def join_group(self, group: str, what: str) -> bool:
        """Subscribe the socket to the channel-layer group of its live messages; False when that failed, so none
        will come (`what` names the socket in the log).

        channels-redis finds out that Redis restarted only when it next uses its pub/sub connection. A process
        with no socket open during the restart learns it from the next socket's subscription: written into the
        dead connection, it fails ("Connection lost"), and the connection is made anew (re-subscribing what it
        held). That socket was left without live messages, silently. So a failure is retried once, at once: it
        fails again only when Redis is really away."""
        for attempt in (1, 2):
            try:
                await self.channel_layer.group_add(group, self.channel_name)
                return True
            except Exception as exc:
                if attempt == 2:
                    logger.warning("%s: channel layer unavailable (%s); no live messages until it is back", what, exc)
                else:
                    logger.info("%s: subscription failed (%s); retried on a new connection", what, exc)
        return False

    # --- the credential the socket was opened with ----------------------------------------------------------------

    async def watch_credential(self, access: Access) -> None:
        """Join the group where the end of the socket's API key or session is announced, and start the watch
        that closes the socket at the key's expiry or when a re-check finds the credential gone."""
        self.credential = StreamCredential.of(access, getattr(self.scope.get("session"), "session_key", None))
        if self.credential is None:
            return
        try:
            await self.channel_layer.group_add(self.credential.group, self.channel_name)
        except Exception as exc:  # the re-check covers it
            logger.warning("credential group unavailable (%s); the socket re-checks its credential", exc)
        self.credential_watch = asyncio.create_task(self._watch_credential(self.credential))

    async def unwatch_credential(self) -> None:
        await _cancel(self.credential_watch)
        if self.credential is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.credential.group, self.channel_name)

    async def _watch_credential(self, credential: StreamCredential) -> None:
        interval = settings.HERMES_WS_RESYNC_SECONDS
        while True:
            delay = interval * random.uniform(0.8, 1.2)  # jittered like the resync
            left = credential.seconds_left()
            if left is not None and left <= delay:
                await asyncio.sleep(max(left, 0.0))
                refusal = credential.refusal_by_clock()
            else:
                await asyncio.sleep(delay)
                try:
                    refusal = await _shared_read(
                        ("credential", *credential.recheck_key), interval / 2, _db(credential.recheck)
                    )
                except DatabaseError as exc:  # an outage: the socket stays until a re-check can tell
                    logger.warning("credential re-check skipped, database error: %s", exc)
                    continue
            if refusal is not None:
                # Still signed in but no longer a member: not an authentication problem (4401 says "sign in").
                code = CLOSE_FORBIDDEN if refusal is LEFT_ORG else CLOSE_UNAUTHENTICATED
                await self.close_from_server(code, refusal.code)
                return

    async def hermes_auth_ended(self, message: dict[str, Any]) -> None:
        """The socket's key was revoked or its session signed out (apps.orgs.auth.end_streams)."""
        await self.close_from_server(CLOSE_UNAUTHENTICATED, message["reason"])

    async def hermes_auth_expires(self, message: dict[str, Any]) -> None:
        """The socket's key was rotated: it now expires at the end of the grace period (apps.orgs.auth)."""
        if self.credential is None or self.closing:
            return
        self.credential.expire_by(datetime.fromtimestamp(message["expires_at"], UTC))
        await _cancel(self.credential_watch)  # it may be asleep until a later moment
        self.credential_watch = asyncio.create_task(self._watch_credential(self.credential))

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


# key -> (monotonic time, future of the read): periodic checks made by every socket of this process (a task's
# progress for its watchers' resync, whether Redis is back for degraded sockets) share one read per interval
# instead of one per socket.
_shared_reads: dict[Any, tuple[float, asyncio.Future[Any]]] = {}
_REDIS_UP = "redis-up"


async def _shared_read(key: Any, max_age: float, read: Callable[[], Awaitable[T]]) -> T:
    now = time.monotonic()
    cached = _shared_reads.get(key)
    if cached is None or now - cached[0] > max_age or _failed(cached[1]):
        future = asyncio.ensure_future(read())
        cached = (now, future)
        _shared_reads[key] = cached
        future.add_done_callback(lambda _f: _forget_later(key, cached, max_age))
    return cast(T, await asyncio.shield(cached[1]))


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None or task is asyncio.current_task():  # a watch that closes the socket stops by returning
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _discard(message: dict[str, Any]) -> None:
    """What a socket sends after its close frame."""


def _forget_later(key: Any, entry: Any, max_age: float) -> None:
    def forget() -> None:
        if _shared_reads.get(key) is entry:
            del _shared_reads[key]

    asyncio.get_running_loop().call_later(max_age, forget)


async def _redis_is_up() -> bool:
    # The channel layer rides on REDIS_URL (settings.CHANNEL_LAYERS); the probe has sub-second timeouts.
    up = (await asyncio.to_thread(probe_redis)).ok
    if up:
        _SUBSCRIBER_LOSSES.redis_answers()
    return up


class _SubscriberLosses(logging.Filter):
    """What channels-redis says when its subscriber loses Redis, made useful.

    It says so only by logging "Unexpected exception in receive task" with a traceback, once a second per shard
    for as long as Redis is away (its on_disconnect/on_reconnect hooks are accepted and never called, 4.3.0).
    Live messages published meanwhile are lost even when Redis is back before any probe looked (a restart takes a
    second or two), so `count` tells org sockets that it happened. And the log gets one warning per outage, without
    the traceback, and one line at its end (when the shared probe finds Redis again), not a traceback a second."""

    QUIET_SECONDS = 30.0  # a loss after this long without one starts a new outage, even if no probe saw the end

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last: float | None = None  # monotonic time of the latest loss of the current outage

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            return True  # not a lost connection: logged as channels-redis logs it
        self.count += 1
        now = time.monotonic()
        starts = self.last is None or now - self.last > self.QUIET_SECONDS
        self.last = now
        if not starts:
            return False
        record.msg = "channel layer lost Redis (%s: %s); live messages resume once it answers again"
        record.args = (exc.__class__.__name__, exc)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True

    def redis_answers(self) -> None:
        if self.last is not None:
            self.last = None
            logger.warning("channel layer: Redis answers again; live messages flow")


_SUBSCRIBER_LOSSES = _SubscriberLosses()
logging.getLogger("channels_redis.pubsub").addFilter(_SUBSCRIBER_LOSSES)


class TaskTimelineConsumer(_ConsumerBase, AsyncJsonWebsocketConsumer):
    groups: list[str] = []

    async def connect(self) -> None:
        self.joined = False
        self.resync_task: asyncio.Task[None] | None = None
        self.presence: Presence | None = None
        access = _access_for(self.scope)
        if not isinstance(access, Access):
            await _refuse(self, access)
            return
        task_id = self.scope["url_route"]["kwargs"]["task_id"]
        task = await _db(task_for_org)(access.org, task_id)
        if task is None:
            # A task page left open in one tab while another switched the session's org reconnects (a network
            # blip, a restart) for the org switched to: "does not exist" was false, and final. Its person learns
            # which org the session is in now instead; anyone else gets the 404 of a missing task.
            holder = await _db(_other_org_holding)(access, task_id)
            if holder is None:
                await _refuse(self, NOT_FOUND)
                return
            await _refuse(self, ORG_SWITCHED, message=_org_switched_message(access.org, holder))
            return
        after = _after(self.scope)
        if not isinstance(after, int):
            await _refuse(self, BAD_AFTER, message=after)
            return
        self.task_id, self.org_id, self.state = task.pk, task.organization_id, task.state
        self.agent_id = task.agent_id
        # An `after` past the task's last event names events the client cannot have seen: taken as it is, the
        # events up to it would be skipped when they come (and `synced` would echo a seq that does not exist).
        self.last_seq = min(after, task.last_seq)
        self.last_live_at = time.monotonic()
        self.lock = asyncio.Lock()
        await self.accept()
        WEBSOCKET_CONNECTIONS.labels(stream="task").inc()
        self.joined = True
        self.group = task_group(self.task_id)
        # Subscribe before reading the database: an event committed after the read is then guaranteed to arrive
        # live, and one that arrives both ways is dropped by seq.
        if not await self.join_group(self.group, f"task {task.pk}"):
            # As a socket opened while Redis was down (on the in-process layer): it follows the database (the
            # periodic resync), and is closed with 1012 once Redis answers, to reconnect onto live messages.
            self.layer_watch = asyncio.create_task(self._await_live_layer())
        await self.watch_credential(access)
        async with self.lock:
            await self._catch_up()
            await self.send_json({"type": "synced", "last_seq": self.last_seq, "state": self.state})
        user = access.user
        self.me = {"user_id": getattr(user, "pk", None), "name": _display_name(user, access)}
        self.presence = Presence(self.task_id, self.channel_name, self.me)
        self.watchers: dict[Any, dict[str, Any]] = {}
        self.presence_sent: tuple[Any, ...] | None = None
        self.presence_heard_at = time.monotonic()  # when the last presence message came (sent to this socket or not)
        await self.presence.join()
        await self._announce()
        self.resync_task = asyncio.create_task(self._resync_loop())

    async def stop_background_work(self) -> None:
        await super().stop_background_work()
        await _cancel(getattr(self, "resync_task", None))  # unset when the socket was refused

    async def disconnect(self, code: int) -> None:
        if not getattr(self, "joined", False):
            return
        WEBSOCKET_CONNECTIONS.labels(stream="task").dec()
        await self.stop_background_work()
        await self.unwatch_credential()
        if self.presence is not None:
            await self.presence.leave()
            await self._announce()
            await self.presence.close()
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The timeline is read-only; a client may ask for a resync (e.g. after its own reconnect logic).
        if isinstance(content, dict) and content.get("type") == "resync":
            async with self.lock:
                await self._catch_up()

    # --- channel-layer handlers -------------------------------------------------------------------------------

    async def task_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        self.last_live_at = time.monotonic()
        async with self.lock:
            seq = int(event["seq"])
            if seq <= self.last_seq:
                return  # already sent (backfill raced the live message)
            if seq > self.last_seq + 1:
                await self._catch_up()  # something was dropped: the database has it (this event is committed)
                return
            # The publisher encodes the frame once for every socket (see broadcast.publish).
            await self._send_event(event, frame=message.get("frame"))

    async def task_presence(self, message: dict[str, Any]) -> None:
        # A watcher opening or closing another tab is announced too (the sockets are what is tracked), yet changes
        # nothing this socket shows: one entry per person. Such a frame (joined and left empty, the same
        # watchers) is not sent.
        self.presence_heard_at = time.monotonic()
        shown = (message["watchers"], message.get("agent_contact"), message.get("agent_online"))
        if shown == self.presence_sent:
            return
        self.presence_sent = shown
        current = {w.get("user_id"): w for w in message["watchers"]}
        joined = [w for key, w in current.items() if key not in self.watchers]
        left = [w for key, w in self.watchers.items() if key not in current]
        self.watchers = current
        await self.send_json({**message, "type": "presence", "joined": joined, "left": left})

    # --- internals ----------------------------------------------------------------------------------------------

    async def _send_event(self, event: dict[str, Any], frame: str | None = None) -> None:
        await self.send(text_data=frame or event_frame(event))
        self.last_seq = int(event["seq"])
        if event["kind"] == "state":
            self.state = event["data"].get("to", self.state)

    async def _catch_up(self) -> None:
        while True:
            events = await _db(event_messages_after)(self.task_id, self.org_id, self.last_seq)
            for event in events:
                await self._send_event(event)
            if len(events) < 500:
                return

    async def _resync_loop(self) -> None:
        interval = settings.HERMES_WS_RESYNC_SECONDS
        while True:
            # Jittered, so sockets opened together do not all wake together.
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                if self.presence is not None:
                    await self.presence.refresh()
                # Not once the terminal event was delivered (nothing can follow it), nor while live events flow (a
                # dropped one shows as a seq gap on the next).
                if self.state not in TERMINAL_STATES and time.monotonic() - self.last_live_at >= interval:
                    progress = await _shared_read(
                        ("progress", self.task_id), interval / 2, partial(_db(task_progress), self.task_id, self.org_id)
                    )
                    if progress is not None and progress[1] > self.last_seq:
                        async with self.lock:
                            await self._catch_up()
                await self._show_presence_changes(interval)
            except DatabaseError as exc:  # an outage: the next interval tries again; no traceback every few seconds
                logger.warning("task %s: resync skipped, database error: %s", self.task_id, exc)
            except Exception:
                logger.exception("task %s: resync failed", self.task_id)

    async def _show_presence_changes(self, interval: float) -> None:
        """Send this socket a presence frame when what it shows is out of date, though nobody joined or left.

        Presence is broadcast on joins and leaves; two changes come without either: the watchers of a killed
        process expire from the sorted set (presence.WATCH_TTL) and the agent's contact state changes (a worker
        reached an agent shown offline). Every socket looks here, at its resync, with reads shared by the sockets
        of the process (one of the watchers per task, one of the agent per agent); no broadcast: each process's
        sockets see the same change themselves. `task_presence` sends only what differs from the last frame."""
        presence = self.presence
        if presence is None:
            return
        heard_at = self.presence_heard_at
        # A read older than the last presence message could undo it (show a watcher who has just left): only a
        # read begun since then will do.
        max_age = min(interval / 2, time.monotonic() - heard_at)
        snapshot = await _shared_read(("watchers", self.task_id), max_age, presence.snapshot)
        contact = await _shared_read(
            ("agent-contact", self.agent_id), max_age, partial(_db(agent_contact), self.agent_id)
        )
        if snapshot is None or self.presence_heard_at != heard_at:  # Redis is away; or newer news came meanwhile
            return
        await self.task_presence(_presence_message(snapshot, contact))

    async def _announce(self) -> None:
        """Schedule the window's presence broadcast, unless another socket of this task already did."""
        presence = self.presence
        if presence is None or not await presence.claim_announcement():
            return
        # Detached from this consumer: a leaving socket's announcement must outlive the socket.
        task = asyncio.create_task(_broadcast_presence(self.channel_layer, self.task_id, self.agent_id))
        _PENDING_ANNOUNCEMENTS.add(task)
        task.add_done_callback(_PENDING_ANNOUNCEMENTS.discard)


_PENDING_ANNOUNCEMENTS: set[asyncio.Task[None]] = set()


async def _broadcast_presence(layer: Any, task_id: Any, agent_id: Any) -> None:
    await asyncio.sleep(ANNOUNCE_WINDOW_MS / 1000)
    presence = Presence(task_id, "", {})  # its own Redis client: the socket that scheduled this may be gone
    try:
        snapshot = await presence.snapshot()
        if snapshot is None:
            return
        contact = await _db(agent_contact)(agent_id)
        await layer.group_send(task_group(task_id), _presence_message(snapshot, contact))
    except Exception as exc:
        logger.debug("presence broadcast failed: %s", exc)
    finally:
        await presence.close()


def _presence_message(snapshot: dict[str, Any], contact: str) -> dict[str, Any]:
    # `agent_online` for clients that read only it: true online, false offline, null otherwise.
    online = {"online": True, "offline": False}.get(contact)
    return {"type": "task.presence", "agent_online": online, "agent_contact": contact, **snapshot}


class OrgTasksConsumer(_ConsumerBase, AsyncJsonWebsocketConsumer):
    """Status changes of every task of the caller's org (list pages).

    Unlike a task's events, status messages have no seq the socket could backfill by: one lost with Redis is
    lost. So the socket watches the layer instead, and once live messages may have been lost — the shared probe
    found Redis down, this process's subscriber lost its connection (a restart shorter than a probe interval), or
    the socket could not subscribe (`join_group`) — it is closed with 1012 as soon as Redis answers again: its
    client reconnects and re-reads the list, as a socket opened while Redis was down (on the in-process layer) is
    told to."""

    async def connect(self) -> None:
        self.joined = False
        access = _access_for(self.scope)
        if not isinstance(access, Access):
            await _refuse(self, access)
            return
        self.group = org_group(access.org.pk)
        # Subscribed before the accept: a client that reads the list once the socket is open (the console, an API
        # client after a 1012) then gets every change made after its read.
        subscribed = await self.join_group(self.group, "org stream")
        if self.channel_layer_alias != DEGRADED_LAYER:  # a degraded socket is closed once Redis is back anyway
            # Not subscribed, the socket misses every status change: it is closed once Redis answers.
            self.layer_watch = asyncio.create_task(self._watch_layer(_SUBSCRIBER_LOSSES.count, missed=not subscribed))
        await self.accept()
        self.joined = True
        WEBSOCKET_CONNECTIONS.labels(stream="org").inc()
        await self.watch_credential(access)

    async def _watch_layer(self, losses: int, *, missed: bool) -> None:
        interval = settings.HERMES_WS_RESYNC_SECONDS
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # jittered like the resync
            up = await _shared_read(_REDIS_UP, interval / 2, _redis_is_up)
            missed = missed or not up or _SUBSCRIBER_LOSSES.count != losses
            if missed and up:
                break
        await self.close_from_server(CLOSE_RECONNECT, "reconnect")

    async def disconnect(self, code: int) -> None:
        if not getattr(self, "joined", False):
            return
        WEBSOCKET_CONNECTIONS.labels(stream="org").dec()
        await self.stop_background_work()
        await self.unwatch_credential()
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def task_status(self, message: dict[str, Any]) -> None:
        await self.send_json(message)


class UnknownPathConsumer(AsyncJsonWebsocketConsumer):
    """Routed last (hermes_site/routing.py): a socket path nothing else matches closes with 4404."""

    # It only closes, so it needs no channel layer: with the default one Channels subscribed the socket on Redis
    # first, and a path that does not exist was an HTTP 500 while Redis was down. An alias that names no layer is
    # none (channels.layers.get_channel_layer).
    channel_layer_alias = None

    async def connect(self) -> None:
        await _refuse(self, NOT_FOUND)


async def _refuse(consumer: AsyncJsonWebsocketConsumer, close: Close, *, message: str | None = None) -> None:
    # Accept, then close with the code: a close before accept is an HTTP 403 that carries no code at all.
    await consumer.accept()
    if message is not None:  # longer than a close reason may be (123 bytes), and for a person to read
        await consumer.send_json({"type": "refused", "code": close[0], "reason": close[1], "message": message})
    await consumer.close(code=close[0], reason=close[1])


def _other_org_holding(access: Access, task_id: Any) -> Organization | None:
    """The org, other than `access.org`, of the signed-in person's that holds the task, or None. Only a session
    has other orgs: an API key belongs to its org alone. (Unlike apps.orgs.decorators.switch_to_the_org_holding,
    it does not switch: a socket only reads.)"""
    if access.api_key is not None or access.user is None:
        return None
    return other_org_holding(access.user, access.org.pk, lambda org: task_for_org(org, task_id) is not None)


def _org_switched_message(current: Organization, holder: Organization) -> str:
    # The wording of the console's 409 `org_switched` (apps.orgs.decorators). Reloading a task page of another of
    # the person's orgs switches the session back to it (apps.tasks.views.detail), so that is the way back offered.
    return (
        f"Live updates stopped: this page belongs to the organization {holder.name}, but you have switched to "
        f"{current.name} since (in another tab). Reload the page to switch back to {holder.name} and follow this "
        f"task live."
    )


def _after(scope: dict[str, Any]) -> int | str | None:
    """`?after=<seq>` (default 0). None when it is not a non-negative integer (the SSE stream answers that 400); the
    REST API's words when it came more than once (its 400, apps.core.api._refuse_query): which one the client
    meant is anyone's guess, and the first was taken silently."""
    values = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True).get("after", [])
    if len(values) > 1:
        return f"Give this parameter once (it came {len(values)} times)."
    try:
        return whole_number(values[0] if values else None, "after", default=0)
    except HermesAPIError:
        return None


def _display_name(user: Any, access: Access) -> str:
    if user is None:
        key = access.api_key
        return f"API key {getattr(key, 'prefix', '')}".strip()
    return str(getattr(user, "name", "") or getattr(user, "email", "") or user.pk)
