"""Who is watching a task — ephemeral state in Redis with TTLs.

A sorted set per task whose members are the watching sockets and whose scores are expiry times, so a socket that
vanished without a disconnect (killed process) drops out after WATCH_TTL. Redis being down makes presence
unknown, never breaks a stream. (Whether the agent is online comes from the agents app: `Agent.is_online`.)
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

WATCH_TTL = 60  # seconds; consumers refresh their entry every HERMES_WS_RESYNC_SECONDS
# Joins and leaves within this window are announced together: 500 sockets opening at once cause a handful of
# broadcasts instead of 500 (each of which would be sent to every watcher).
ANNOUNCE_WINDOW_MS = 300


def _watchers_key(task_id: Any) -> str:
    return f"hermes:presence:task:{task_id}"


def _member(channel_name: str, user: dict[str, Any]) -> str:
    return json.dumps({"channel": channel_name, **user}, sort_keys=True, separators=(",", ":"))


class Presence:
    """One websocket's view of presence (an async Redis client it opens lazily and closes on disconnect)."""

    def __init__(self, task_id: Any, channel_name: str, user: dict[str, Any]) -> None:
        self.key = _watchers_key(task_id)
        self.announce_key = f"{self.key}:announce"
        self.member = _member(channel_name, user)
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
        return self._client

    async def join(self) -> None:
        await self._update(add=True)

    async def refresh(self) -> None:
        await self._update(add=True)

    async def leave(self) -> None:
        await self._update(add=False)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def claim_announcement(self) -> bool:
        """True for the one socket that announces the changes of the current window (SET NX with expiry)."""
        try:
            return bool(await self._redis().set(self.announce_key, 1, nx=True, px=ANNOUNCE_WINDOW_MS))
        except (redis.RedisError, OSError) as exc:
            logger.debug("presence unavailable: %s", exc)
            return False

    async def snapshot(self) -> dict[str, Any] | None:
        try:
            members = await self._redis().zrangebyscore(self.key, time.time(), "+inf")
        except (redis.RedisError, OSError) as exc:
            logger.debug("presence unavailable: %s", exc)
            return None
        watchers: dict[Any, dict[str, Any]] = {}
        for raw in members:
            entry = json.loads(raw)  # type: ignore[arg-type]
            entry.pop("channel", None)
            watchers[entry.get("user_id")] = entry  # one entry per person, however many tabs they have open
        return {"watchers": sorted(watchers.values(), key=lambda w: str(w.get("name", "")))}

    async def _update(self, *, add: bool) -> None:
        now = time.time()
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.zremrangebyscore(self.key, "-inf", now)
            if add:
                pipe.zadd(self.key, {self.member: now + WATCH_TTL})
                pipe.expire(self.key, WATCH_TTL * 2)
            else:
                pipe.zrem(self.key, self.member)
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.debug("presence unavailable: %s", exc)
