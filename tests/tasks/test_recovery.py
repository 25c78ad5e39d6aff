"""Lost workers, lost Redis and a RabbitMQ broker: the database row keeps every task on track."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction

from apps.agents.actions import register_agent_by_url
from apps.tasks import actions
from apps.tasks.models import Task, TaskEvent
from apps.tasks.tasks import dispatch, sweep_tasks
from tests.tasks.conftest import celery_route, reload_task, timeline, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def text(value: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"kind": "text", "text": value}]}


@contextmanager
def worker_process(queue: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A hermes_site worker` as its own process (own process group), on this test database and queue."""
    db = connection.settings_dict
    full_env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "HERMES_ENV": "test",
        "HERMES_SSRF_ALLOWLIST": "127.0.0.1",
        "HERMES_TASK_HEARTBEAT_SECONDS": "0.2",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hermes_site", "worker", "-P", "threads", "-c", "2", "-l", "WARNING"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("HERMES_TEST_WORKER_LOG", os.devnull), "ab"),  # noqa: SIM115
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_killed_worker_is_replaced_and_the_sweeper_finishes_the_task(
    agents_base: str, org: Any, settings: Any, fast_tasks: None, request: Any, private_queue: str
) -> None:
    settings.HERMES_TASK_STALE_SECONDS = 1.0
    agent = register_agent_by_url(org=org, url=f"{agents_base}/slow/")
    task = actions.create_task(org=org, agent=agent, message=text("25"))
    with worker_process(private_queue) as proc:
        running = wait_for(lambda: (t := reload_task(task)).claimed_by and t.remote_task_id and t, timeout=30)
        wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 2)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to release the claim or ack the message
    dead_worker = running.claimed_by
    assert sweep_tasks() == {"deadline": 0, "redispatched": 0, "auth_rechecked": 0}  # its heartbeat is still fresh
    request.getfixturevalue("task_worker")
    wait_for(lambda: sweep_tasks()["redispatched"] == 1, timeout=10, interval=0.2)
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=20)
    assert task.state == "completed" and task.attempts == 2 and task.claimed_by == ""
    retry = [data for kind, data in timeline(task) if kind == "retry"]
    assert retry == [{"reason": "worker_lost", "error": f"worker {dead_worker} stopped", "attempt": 1, "delay": 0}]
    # The second worker watched the agent's task (GetTask) instead of sending the message again.
    from tests.tasks.agents import SlowExecutor

    assert SlowExecutor.started.count(task.remote_task_id) == 1
    assert timeline(task)[-1] == ("state", "completed")
    # Its first look at the agent's task repeated the last progress line the dead worker had recorded.
    progress = [data["parts"][0]["text"] for kind, data in timeline(task) if kind == "progress"]
    assert len(progress) == len(set(progress)), progress


def test_lost_dispatch_message_is_redispatched(org: Any, settings: Any, task_worker: Any, agents_base: str) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.HERMES_TASK_REDISPATCH_SECONDS = 0
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("apps.tasks.tasks.run_task.apply_async", lambda *a, **k: None)  # the broker "loses" it
        task = actions.create_task(org=org, agent=agent, message=text("hi"))
    Task.objects.for_org(org).filter(pk=task.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert sweep_tasks()["redispatched"] == 1
    assert wait_for(lambda: (t := reload_task(task)).is_terminal and t).state == "completed"


def test_a_run_message_that_finds_the_row_locked_comes_back(org: Any, task_worker: Any, agents_base: str) -> None:
    # The claim skips a locked row (a second dispatch of a task being claimed is harmless that way); a row locked
    # by a request that changes it (e.g. a duplicate follow-up being refused) used to drop the message, and the
    # task waited for the sweeper, a minute later.
    agent = register_agent_by_url(org=org, url=f"{agents_base}/plain/")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("apps.tasks.tasks.run_task.apply_async", lambda *a, **k: None)
        task = actions.create_task(org=org, agent=agent, message=text("hi"))
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        with transaction.atomic():
            Task.objects.for_org(org).select_for_update().get(pk=task.pk)
            locked.set()
            release.wait(10)
        connection.close()  # this thread's own

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(10)
    dispatch(task.pk)
    time.sleep(1.0)  # the worker has looked at the row, locked, by now
    assert reload_task(task).state == "submitted"
    release.set()
    holder.join()
    assert wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=10).state == "completed"


@pytest.fixture
def amqp_url() -> str:
    url = os.environ.get("HERMES_TEST_AMQP_URL")
    if not url:
        pytest.skip("HERMES_TEST_AMQP_URL is not set (CI sets amqp://guest:guest@127.0.0.1:5672//)")
    return url


def test_rabbitmq_broker_runs_tasks_while_redis_is_down(
    amqp_url: str, agents_base: str, org: Any, settings: Any, fast_tasks: None, free_port: int
) -> None:
    """Broker on RabbitMQ, channel layer on a Redis that is not there: the task runs and its timeline persists."""
    from channels.layers import channel_layers

    dead_redis = f"redis://127.0.0.1:{free_port}/0"
    settings.REDIS_URL = dead_redis
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [dead_redis]}}
    }
    channel_layers.backends.clear()
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    try:
        with (
            celery_route(amqp_url) as queue,
            worker_process(queue, CELERY_BROKER_URL=amqp_url, REDIS_URL=dead_redis),
        ):
            task = actions.create_task(org=org, agent=agent, message=text("over rabbit"))
            task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=30)
    finally:
        channel_layers.backends.clear()
    assert task.state == "completed"
    kinds = list(TaskEvent.objects.for_org(org).filter(task=task).order_by("seq").values_list("kind", flat=True))
    assert kinds == ["state", "message", "state", "progress", "artifact", "state"]
