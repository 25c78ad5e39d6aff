from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from django.test import Client

from apps.agents.models import Agent, Visibility
from apps.core.permissions import Access


@contextmanager
def celery_route(broker_url: str | None = None) -> Iterator[str]:
    """Send this process's Celery jobs to a queue of our own (and optionally another broker); yields the queue.

    Other test packages run workers of their own on the same broker and test database (e2e, ops): a private queue
    keeps them off our tasks, and RabbitMQ is shared by parallel runs. Celery caches connections, producers and
    the queue table, so they are reset on the way in and out.
    """
    from hermes_site.celery import app

    def reset() -> None:
        app._pool = None
        app.amqp._producer_pool = None
        for cached in ("queues", "default_queue", "router"):
            app.amqp.__dict__.pop(cached, None)

    previous = app.conf.broker_url, app.conf.task_default_queue
    queue = f"hermes-test-tasks-{uuid.uuid4().hex[:10]}"
    app.conf.broker_url, app.conf.task_default_queue = broker_url or previous[0], queue
    reset()
    try:
        yield queue
    finally:
        app.conf.broker_url, app.conf.task_default_queue = previous
        reset()
        try:
            from kombu import Connection

            with Connection(broker_url or previous[0], connect_timeout=2) as conn:
                conn.default_channel.queue_delete(queue)
        except Exception:  # the queue may never have been declared; the broker may be the one that is down
            pass


@pytest.fixture(autouse=True, scope="package")
def private_queue() -> Iterator[str]:
    with celery_route() as queue:
        yield queue


def make_agent(org: Any, slug: str = "echo", **fields: Any) -> Agent:
    defaults: dict[str, Any] = {
        "name": slug.title(),
        "url": f"http://127.0.0.1:9/demo-agents/{slug}/",
        "capabilities": {"streaming": True},
    }
    defaults.update(fields)
    return Agent.objects.create(organization=org, slug=slug, **defaults)


@pytest.fixture
def agent(org: Any) -> Agent:
    return make_agent(org)


MESSAGE = {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}


@pytest.fixture
def task(org: Any, alice: Any, agent: Agent) -> Any:
    """A submitted task of acme's (alice is its owner), for the stream tests."""
    from apps.tasks import actions

    return actions.create_task(org=org, agent=agent, message=MESSAGE)


@pytest.fixture
def public_agent(other_org: Any) -> Agent:
    return make_agent(other_org, "public-bot", visibility=Visibility.PUBLIC)


@pytest.fixture
def private_foreign_agent(other_org: Any) -> Agent:
    return make_agent(other_org, "private-bot")


def access(org: Any, user: Any, role: str = "owner", scopes: frozenset[str] | None = None) -> Access:
    return Access(org=org, role=role, user=user, scopes=scopes)


TEXT = {"parts": [{"kind": "text", "text": "hello"}]}


@pytest.fixture(scope="session")
def agents_base() -> Iterator[str]:
    """SDK-built agents over real HTTP on loopback for the whole session (they hold no database state)."""
    from tests.servers import DeferredApp, serve_asgi
    from tests.tasks.agents import build

    app = DeferredApp()
    with serve_asgi(app) as base:
        app.app = build(base)
        yield base


@pytest.fixture
def fast_tasks(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    settings.HERMES_TASK_HEARTBEAT_SECONDS = 0.2
    settings.HERMES_TASK_RETRY_BASE_SECONDS = 0.05
    settings.HERMES_TASK_RETRY_MAX_SECONDS = 0.2
    settings.HERMES_TASK_POLL_SECONDS = 0.1
    settings.HERMES_SSE_POLL_SECONDS = 0.05


@pytest.fixture
def short_lived_connections(transactional_db: Any) -> Iterator[None]:
    """Threads of in-process servers and workers open their own connections; with CONN_MAX_AGE 0 each is closed
    at the end of its request or job, so none is left open on the test database when the session drops it."""
    from django.db import connections

    db_settings = connections.settings["default"]
    previous = db_settings.get("CONN_MAX_AGE", 0)
    db_settings["CONN_MAX_AGE"] = 0
    yield
    db_settings["CONN_MAX_AGE"] = previous


@pytest.fixture
def task_worker(short_lived_connections: None, fast_tasks: None) -> Iterator[Any]:
    """A real Celery worker (thread pool) consuming this session's queue from the configured broker."""
    from celery.contrib.testing.worker import start_worker

    from hermes_site.celery import app

    # start_worker sets up Celery's logging (root level ERROR): put the root logger back for the tests that follow.
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10) as w:
            yield w
    finally:
        logging.root.setLevel(root_level)
        logging.root.handlers[:] = root_handlers


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def reload_task(task: Any) -> Any:
    from apps.tasks.models import Task

    return Task.objects.unscoped("test").get(pk=task["id"] if isinstance(task, dict) else task.pk)


def timeline(task: Any) -> list[tuple[str, Any]]:
    from apps.tasks.models import TaskEvent

    rows = TaskEvent.objects.unscoped("test").filter(task_id=task.pk).order_by("seq")
    return [(e.kind, e.data.get("to") if e.kind == "state" else e.data) for e in rows]


@pytest.fixture
def hermes(short_lived_connections: None) -> Iterator[str]:
    """Hermes' ASGI app (HTTP, websockets, demo agents) served by uvicorn on a free loopback port."""
    from hermes_site.asgi import application
    from tests.servers import serve_asgi

    with serve_asgi(application) as base:
        yield base


CSRF = "t" * 32  # a console session posts with the CSRF cookie and header, like the HTMX console does


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF}"


def nested(depth: int) -> dict[str, Any]:
    """A JSON object `depth` levels deep: {"a": {"a": … 1}}."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def fast_resync(settings: Any) -> None:
    settings.HERMES_WS_RESYNC_SECONDS = 0.2


@pytest.fixture
def embedded_redis(settings: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis of the test's own, which the test may stop and start again on the same port (`restart`)."""
    from hermes_site.embedded import start_redis, stop_redis

    url, proc = start_redis(directory=tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url]}},
    }
    channel_layers.backends.clear()
    server: dict[str, Any] = {"proc": proc}
    server["stop"] = lambda: stop_redis(server["proc"], directory=tmp_path)

    def restart() -> None:
        server["proc"] = start_redis(port=port, directory=tmp_path)[1]

    server["start"] = restart
    try:
        yield server
    finally:
        stop_redis(server["proc"], directory=tmp_path)
        channel_layers.backends.clear()
