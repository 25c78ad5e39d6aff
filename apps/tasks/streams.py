"""Server-Sent Events for a task timeline (`GET /api/v1/tasks/{id}/stream`).

The stream reads the database, not the channel layer: it works with Redis down and can never skip an event
(each poll asks for seq > last sent). It has a bounded lifetime (HERMES_SSE_MAX_SECONDS) and ends as soon as the
task is terminal and fully sent; the client reconnects with `Last-Event-ID` and resumes exactly where it was.
It also ends, with `event: end` and an error, once the API key or session it was opened with stops authenticating
(revoked, expired, signed out): the key's expiry is known without a query, and the credential is re-read every
CREDENTIAL_RECHECK_SECONDS — the stream does not use the channel layer, where revocation is announced to websockets.

Under WSGI (gunicorn sync workers) a stream occupies a worker for its lifetime, hence the bound; production
routes `/api/v1/tasks/*/stream` to the ASGI process (docs/tasks.md), where the same cursor is driven by an async
generator that sleeps on the event loop and runs each poll in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from apps.orgs.auth import Refusal, StreamCredential
from apps.tasks.models import TERMINAL_STATES
from apps.tasks.selectors import event_messages_after, task_progress

KEEPALIVE_SECONDS = 15.0
# One indexed read a second per stream (it polls events four times a second): how late a revocation may end it.
CREDENTIAL_RECHECK_SECONDS = 1.0


def format_event(event: dict[str, Any]) -> bytes:
    return f"id: {event['seq']}\nevent: {event['kind']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def end_frame(data: dict[str, Any]) -> bytes:
    """The last frame: `{"state"}` of a final task, or `{"error": {"code", "message"}}` (the API's error shape)."""
    return f"event: end\ndata: {json.dumps(data)}\n\n".encode()


class TimelineCursor:
    """Polls one task's events after `last`; `poll()` returns the frames to send and whether the stream is done."""

    def __init__(
        self,
        task_id: Any,
        org_id: Any,
        after: int,
        max_seconds: float | None = None,
        credential: StreamCredential | None = None,
    ) -> None:
        self.task_id = task_id
        self.org_id = org_id
        self.last = after
        self.started = time.monotonic()
        self.max_seconds = settings.HERMES_SSE_MAX_SECONDS if max_seconds is None else max_seconds
        self.last_frame = self.started
        self.credential = credential
        self.credential_checked = self.started  # the request was authenticated just now

    def opening(self) -> bytes:
        # Tell EventSource to reconnect quickly when we end the stream on the lifetime bound.
        return b"retry: 1000\n\n"

    def poll(self) -> tuple[list[bytes], bool]:
        refusal = self._credential_refusal()
        if refusal is not None:
            return [end_frame({"error": {"code": refusal.code, "message": refusal.message}})], True
        frames: list[bytes] = []
        events = event_messages_after(self.task_id, self.org_id, self.last)
        for event in events:
            frames.append(format_event(event))
            self.last = event["seq"]
        done = False
        if not events:
            progress = task_progress(self.task_id, self.org_id)
            if progress is None:
                done = True
            else:
                state, last_seq = progress
                if state in TERMINAL_STATES and last_seq <= self.last:
                    frames.append(end_frame({"state": state}))
                    done = True
        now = time.monotonic()
        if not done and now - self.started >= self.max_seconds:
            done = True
        if frames:
            self.last_frame = now
        elif now - self.last_frame >= KEEPALIVE_SECONDS:
            frames.append(b": keepalive\n\n")
            self.last_frame = now
        return frames, done

    def _credential_refusal(self) -> Refusal | None:
        if self.credential is None:
            return None
        refusal = self.credential.refusal_by_clock()
        now = time.monotonic()
        if refusal is None and now - self.credential_checked >= CREDENTIAL_RECHECK_SECONDS:
            self.credential_checked = now
            refusal = self.credential.recheck()
        return refusal

    def sync_frames(self) -> Iterator[bytes]:
        # No `finally: close_old_connections()` here: a generator left unfinished runs its `finally` when it is
        # garbage-collected, at any later moment, in whatever thread collects it and whatever transaction that
        # thread is in; closing the connection inside someone's atomic block broke that transaction ("An error
        # occurred in the current transaction"). The WSGI server closes the response, whose `request_finished`
        # signal hands the connection back, as for any other response.
        yield self.opening()
        while True:
            frames, done = self.poll()
            yield from frames
            if done:
                return
            time.sleep(settings.HERMES_SSE_POLL_SECONDS)

    def _poll_and_release(self) -> tuple[list[bytes], bool]:
        # Executor threads outlive the request: hand the connection back (to the pool under ASGI) every poll.
        try:
            return self.poll()
        finally:
            close_old_connections()

    async def async_frames(self) -> AsyncIterator[bytes]:
        yield self.opening()
        poll = sync_to_async(self._poll_and_release, thread_sensitive=False)
        while True:
            frames, done = await poll()
            for frame in frames:
                yield frame
            if done:
                return
            await asyncio.sleep(settings.HERMES_SSE_POLL_SECONDS)
