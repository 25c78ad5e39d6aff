"""Real processes for ops tests: a Celery worker on the test database and our own Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from hermes_site.config import BASE_DIR


def database_url() -> str:
    """The URL of the database the tests run on (pytest-django's test_ database), for child processes."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HERMES_ENV": "test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_TASK_ALWAYS_EAGER": "false",
        }
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[str], hostname: str, log: Path) -> None:
        self.proc, self.hostname, self.log = proc, hostname, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()


@contextmanager
def serve_wsgi(log: Path, port: int, workers: int = 1, **env: str) -> Iterator[str]:
    """gunicorn (the production HTTP server) on the test database; yields the base URL once it answers."""
    import httpx

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "hermes_site.wsgi:application",
            "-c",
            str(BASE_DIR / "deploy" / "gunicorn.conf.py"),
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=BASE_DIR,
        env=child_env(**env),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/api/v1/health/live", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _set_routes(app: Any, routes: Any) -> None:
    app.conf.task_routes = routes
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)  # the cached Router holds the previous route table


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a real `celery worker` (solo pool) on the test database; stopped with SIGTERM at teardown.

    Other suites keep workers of their own on the same broker (the e2e server lives for the whole session), so
    ops jobs are routed to a queue private to this test and only our worker consumes it.
    """
    from hermes_site.celery import app

    started: list[WorkerProcess] = []
    queue = f"ops-test-{uuid.uuid4().hex[:8]}"
    saved_routes = app.conf.task_routes
    _set_routes(app, {"apps.ops.tasks.*": {"queue": queue}})

    def start(*args: str, **env: str) -> WorkerProcess:
        from apps.ops.worker import seen_workers

        if "--queues" not in args:
            args = ("--queues", queue, *args)
        hostname = f"ops-test-{uuid.uuid4().hex[:8]}@localhost"
        log = tmp_path / f"{hostname}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hermes_site",
                "worker",
                "--pool",
                "solo",
                "-n",
                hostname,
                "--loglevel",
                "INFO",
                *args,
            ],
            cwd=BASE_DIR,
            env=child_env(**env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        worker = WorkerProcess(proc, hostname, log)
        started.append(worker)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.output()}")
            return any(w["hostname"] == hostname for w in seen_workers(60)[0])

        wait_for(ready, timeout=60)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
        _set_routes(app, saved_routes)
