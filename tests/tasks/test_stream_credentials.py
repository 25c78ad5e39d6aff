"""Streams live only as long as the API key or session they were opened with: revocation, the end of a rotation's
grace period, expiry and signing out close websockets (4401 with the reason) and end SSE responses.

Websockets run through the real auth middleware and the Redis channel layer. Their fallback re-check runs every
HERMES_WS_RESYNC_SECONDS; the tests of the announcements set it far beyond their waits, so only the announcement
(or the expiry timer) can be what closed the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import OperationalError, transaction
from django.test import Client
from django.utils import timezone

from apps.orgs import auth
from apps.orgs.actions import revoke_api_key, rotate_api_key
from apps.tasks import actions
from apps.tasks.actions import Observation
from tests.factories import access_for, issue_api_key, key_client
from tests.tasks.test_consumers import APP, receive_until
from tests.tasks.wsclient import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
SOCKET_PATHS = ["/ws/tasks/{task}/", "/ws/org/"]


@pytest.fixture
def no_recheck(settings: Any) -> None:
    settings.HERMES_WS_RESYNC_SECONDS = 60


def key_socket(path: str, plaintext: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(APP, f"{path}?api_key={plaintext}")


def signed_in(user: Any) -> tuple[Client, list[tuple[bytes, bytes]]]:
    """A browser signed in as `user` (a session of its own) and the cookie its sockets present."""
    client = Client()
    client.force_login(user)
    return client, [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


async def opened(ws: WebsocketCommunicator, path: str) -> None:
    connected, code = await ws.connect()
    assert connected, (code, ws.close_reason)
    if path.startswith("/ws/tasks/"):
        await receive_until(ws, lambda f: f["type"] == "synced")


async def stays_open(ws: WebsocketCommunicator, seconds: float = 0.5) -> bool:
    """Nothing but frames (presence, events) for `seconds`: the server did not close the socket."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await ws.receive_nothing(timeout=left):
            return True
        if (await ws.receive_output())["type"] == "websocket.close":
            return False
    return True


def revoke_through_api(key: Any, user: Any) -> None:
    client = Client()
    client.force_login(user)
    assert client.post(f"/api/v1/keys/{key.pk}/revoke").status_code == 200


def revoke_through_console(key: Any, user: Any) -> None:
    client = Client()
    client.force_login(user)
    assert client.post(f"/org/keys/{key.pk}/revoke/", HTTP_HX_REQUEST="true").status_code == 200


@pytest.mark.parametrize("revoke", [revoke_through_api, revoke_through_console])
@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_revoking_a_key_closes_its_sockets_at_once(
    org: Any, alice: Any, task: Any, no_recheck: None, path: str, revoke: Any
) -> None:
    path = path.format(task=task.pk)
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    _other_key, other = issue_api_key(alice, org, ["tasks:read"])

    async def scenario() -> None:
        revoked, kept = key_socket(path, plaintext), key_socket(path, other)
        await opened(revoked, path)
        await opened(kept, path)
        started = time.monotonic()
        await database_sync_to_async(revoke)(key, alice)
        assert await revoked.closed(timeout=3) == (4401, "key_revoked")
        assert time.monotonic() - started < 2
        # Until the client's disconnect arrives the socket still gets live messages: nothing follows the close.
        await database_sync_to_async(actions.record)(task, [Observation(kind="state", data={}, state="working")])
        assert await revoked.receive_nothing(timeout=0.5)
        await revoked.disconnect(code=4401)  # re-raises, should the consumer have failed
        # Another key's socket on the same stream is untouched.
        if path.startswith("/ws/tasks/"):
            assert (await receive_until(kept, lambda f: f["type"] == "event"))[-1]["event"]["seq"] == 3
        else:
            assert (await kept.receive_json_from())["type"] == "task.status"
        await kept.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_a_lost_announcement_is_caught_by_the_recheck(
    org: Any, alice: Any, task: Any, settings: Any, monkeypatch: Any, path: str
) -> None:
    """Redis dropped the announcement (or the socket is on the in-process layer): the periodic re-check of the
    key closes the socket within about HERMES_WS_RESYNC_SECONDS."""
    settings.HERMES_WS_RESYNC_SECONDS = 0.3
    monkeypatch.setattr(auth, "announce_to_streams", lambda group, message: None)
    path = path.format(task=task.pk)
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    access = access_for(alice, org)

    async def scenario() -> None:
        ws = key_socket(path, plaintext)
        await opened(ws, path)
        await database_sync_to_async(revoke_api_key)(access=access, key=key)
        assert await ws.closed(timeout=3) == (4401, "key_revoked")
        await ws.disconnect(code=4401)

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_a_socket_closes_when_its_key_expires(org: Any, alice: Any, task: Any, no_recheck: None, path: str) -> None:
    path = path.format(task=task.pk)
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"], expires_at=timezone.now() + timedelta(seconds=1.5))

    async def scenario() -> None:
        ws = key_socket(path, plaintext)
        await opened(ws, path)
        opened_at = time.monotonic()
        assert await ws.closed(timeout=4) == (4401, "key_expired")
        assert time.monotonic() - opened_at > 0.5  # at its expiry, not at once
        await ws.disconnect(code=4401)

    async_to_sync(scenario)()


def test_rotation_closes_the_old_keys_sockets_when_the_grace_period_ends(
    org: Any, alice: Any, task: Any, no_recheck: None
) -> None:
    path = f"/ws/tasks/{task.pk}/"
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    access = access_for(alice, org)

    async def scenario() -> None:
        old = key_socket(path, plaintext)
        await opened(old, path)
        successor = await database_sync_to_async(rotate_api_key)(access=access, key=key, grace=timedelta(seconds=1))
        new = key_socket(path, successor.plaintext)
        await opened(new, path)
        assert await old.closed(timeout=4) == (4401, "key_expired")
        assert await stays_open(new)  # the successor's socket stays
        await old.disconnect(code=4401)
        await new.disconnect()

    async_to_sync(scenario)()


def test_signing_out_closes_that_sessions_sockets_only(alice: Any, task: Any, no_recheck: None) -> None:
    path = f"/ws/tasks/{task.pk}/"
    leaving, leaving_cookie = signed_in(alice)
    _staying, staying_cookie = signed_in(alice)  # the same person in another browser

    async def scenario() -> None:
        signed_out = WebsocketCommunicator(APP, path, headers=leaving_cookie)
        other = WebsocketCommunicator(APP, path, headers=staying_cookie)
        await opened(signed_out, path)
        await opened(other, path)
        response = await database_sync_to_async(leaving.post)("/accounts/logout/")
        assert response.status_code == 302
        assert await signed_out.closed(timeout=3) == (4401, "signed_out")
        await signed_out.disconnect(code=4401)
        assert await stays_open(other)
        await other.disconnect()

    async_to_sync(scenario)()


def test_a_session_that_ended_unannounced_is_caught_by_the_recheck(
    alice: Any, task: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.HERMES_WS_RESYNC_SECONDS = 0.3
    monkeypatch.setattr(auth, "announce_to_streams", lambda group, message: None)
    client, cookie = signed_in(alice)

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, "/ws/org/", headers=cookie)
        await opened(ws, "/ws/org/")
        await database_sync_to_async(client.post)("/accounts/logout/")
        assert await ws.closed(timeout=3) == (4401, "signed_out")
        await ws.disconnect(code=4401)

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", SOCKET_PATHS)
@pytest.mark.parametrize(
    ("credential", "close"),
    [
        ("none", (4401, "not_authenticated")),
        ("revoked", (4401, "key_revoked")),
        ("expired", (4401, "key_expired")),
        ("malformed", (4401, "key_malformed")),
        ("no-tasks-scope", (4403, "missing_scope")),
    ],
)
def test_a_refused_socket_says_why(
    org: Any, alice: Any, task: Any, path: str, credential: str, close: tuple[int, str]
) -> None:
    key, plaintext = issue_api_key(alice, org, ["agents:read"] if credential == "no-tasks-scope" else ["tasks:read"])
    if credential == "revoked":
        revoke_api_key(access=access_for(alice, org), key=key)
    if credential == "expired":
        type(key).objects.for_org(org).filter(pk=key.pk).update(expires_at=timezone.now())
    query = {"none": "", "malformed": "?api_key=hrm_short"}.get(credential, f"?api_key={plaintext}")

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, path.format(task=task.pk) + query)
        connected, code = await ws.connect()
        assert not connected and (code, ws.close_reason) == close

    async_to_sync(scenario)()


@pytest.mark.parametrize(("path", "reason"), [("/ws/tasks/{task}/?after=x", "invalid"), ("/ws/nothing/", "not_found")])
def test_other_refusals_have_a_reason_too(org: Any, alice: Any, task: Any, path: str, reason: str) -> None:
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"])

    async def scenario() -> None:
        path_with_key = path.format(task=task.pk) + ("&" if "?" in path else "?") + f"api_key={plaintext}"
        ws = WebsocketCommunicator(APP, path_with_key)
        connected, _code = await ws.connect()
        assert not connected and ws.close_reason == reason

    async_to_sync(scenario)()


def test_no_credential_watch_outlives_a_socket_that_failed(org: Any, alice: Any, task: Any, monkeypatch: Any) -> None:
    """The database goes away half-way through `connect`, after the watch started: the socket closes with 1013 and
    nothing calls `disconnect`, yet its background tasks end with it."""

    def refuse(*args: Any) -> Any:
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr("apps.tasks.consumers.event_messages_after", refuse)
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"])

    async def scenario() -> None:
        ws = key_socket(f"/ws/tasks/{task.pk}/", plaintext)
        assert await ws.connect() == (False, 1013)
        await ws.wait()
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if "_watch_credential" in repr(t.get_coro())]

    async_to_sync(scenario)()


def test_revocation_is_announced_after_commit_only(org: Any, alice: Any, monkeypatch: Any) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(auth, "announce_to_streams", lambda group, message: sent.append((group, message)))
    key, _ = issue_api_key(alice, org, ["tasks:read"])
    with pytest.raises(RuntimeError), transaction.atomic():
        revoke_api_key(access=access_for(alice, org), key=key)
        raise RuntimeError("rolled back")
    assert sent == []
    revoke_api_key(access=access_for(alice, org), key=key)
    assert sent == [(f"auth.key.{key.pk}", {"type": "hermes.auth_ended", "reason": "key_revoked"})]


# --- SSE ------------------------------------------------------------------------------------------------------


@pytest.fixture
def sse(settings: Any) -> None:
    settings.HERMES_SSE_POLL_SECONDS = 0.05
    settings.HERMES_SSE_MAX_SECONDS = 8  # what a stream that is not ended lasts in these tests


def frames_of(response: Any) -> Iterator[bytes]:
    assert response.status_code == 200, response.content
    return iter(response.streaming_content)


def end_of(frames: Iterator[bytes]) -> tuple[dict[str, Any], float]:
    """Read up to `event: end`: its data, and how long that took."""
    started = time.monotonic()
    for frame in frames:
        if frame.startswith(b"event: end\n"):
            return json.loads(frame.split(b"data: ", 1)[1]), time.monotonic() - started
    raise AssertionError("the stream ended without `event: end`")


def test_sse_ends_soon_after_its_key_is_revoked(org: Any, alice: Any, task: Any, sse: None) -> None:
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    frames = frames_of(key_client(plaintext).get(f"/api/v1/tasks/{task.pk}/stream"))
    assert next(frames).startswith(b"retry:") and next(frames).startswith(b"id: 1\n")
    revoke_api_key(access=access_for(alice, org), key=key)
    end, took = end_of(frames)
    assert end["error"]["code"] == "key_revoked" and key.display in end["error"]["message"]
    assert took < 2.5  # CREDENTIAL_RECHECK_SECONDS, not HERMES_SSE_MAX_SECONDS


def test_sse_ends_when_its_key_expires(org: Any, alice: Any, task: Any, sse: None) -> None:
    _key, plaintext = issue_api_key(alice, org, ["tasks:read"], expires_at=timezone.now() + timedelta(seconds=1))
    end, took = end_of(frames_of(key_client(plaintext).get(f"/api/v1/tasks/{task.pk}/stream")))
    assert end["error"]["code"] == "key_expired" and took < 2.5


def test_sse_ends_when_its_session_signs_out(alice: Any, task: Any, sse: None) -> None:
    client, _cookie = signed_in(alice)
    frames = frames_of(client.get(f"/api/v1/tasks/{task.pk}/stream"))
    next(frames)
    client.post("/accounts/logout/")
    end, took = end_of(frames)
    assert end["error"]["code"] == "signed_out" and took < 2.5


def _remove(member: Any, org: Any) -> None:
    from apps.orgs.models import Membership

    Membership.objects.for_org(org).filter(user=member).delete()


@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_a_removed_members_sockets_close_at_the_recheck(
    org: Any, bob: Any, task: Any, settings: Any, path: str
) -> None:  # fmt: skip
    """Still signed in, but no longer in the org: its live task data must stop (it streamed on until sign-out)."""
    settings.HERMES_WS_RESYNC_SECONDS = 0.3
    _client, cookie = signed_in(bob)

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, path.format(task=task.pk), headers=cookie)
        await opened(ws, path)
        await database_sync_to_async(_remove)(bob, org)
        assert await ws.closed(timeout=3) == (4403, "membership_ended")
        await ws.disconnect(code=4403)

    async_to_sync(scenario)()


def test_sse_ends_when_its_person_leaves_the_org(org: Any, bob: Any, task: Any, sse: None) -> None:
    client, _cookie = signed_in(bob)
    frames = frames_of(client.get(f"/api/v1/tasks/{task.pk}/stream"))
    next(frames)
    _remove(bob, org)
    end, took = end_of(frames)
    assert end["error"]["code"] == "membership_ended" and took < 2.5


@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_signed_in_but_in_no_org_is_a_4403_not_a_sign_in(alice: Any, task: Any, path: str) -> None:
    """The HTTP twin answers 403 `no_organization`; 4401 told the console to sign in again."""
    from django.contrib.auth import get_user_model

    _client, cookie = signed_in(get_user_model().objects.create_user("loner@example.test", "pw-loner-123"))

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, path.format(task=task.pk), headers=cookie)
        connected, code = await ws.connect()
        assert not connected and (code, ws.close_reason) == (4403, "no_organization")

    async_to_sync(scenario)()


def test_an_unfinished_sse_stream_collected_later_leaves_the_threads_transaction_alone(
    org: Any, task: Any, sse: None
) -> None:
    """A stream a client stopped reading is finalized whenever the garbage collector gets to it, in whatever
    thread and transaction that is: its generator closed the connection then, and the transaction it landed in
    failed on its next query ("An error occurred in the current transaction"), in another test or request."""
    from apps.tasks.models import Task
    from apps.tasks.streams import TimelineCursor

    frames = TimelineCursor(task.pk, org.pk, 0).sync_frames()  # what GET …/stream serves under WSGI
    assert next(frames).startswith(b"retry:") and next(frames).startswith(b"id: 1\n")  # into the event loop
    with transaction.atomic():
        assert Task.objects.for_org(org).filter(pk=task.pk).exists()
        frames.close()  # what the collector does to an abandoned stream, here at a known moment
        assert Task.objects.for_org(org).filter(pk=task.pk).exists()
