"""End-to-end fixtures: the real app (uvicorn + hermes_site.asgi, and a Celery worker) on loopback, driven by
Debian's Chromium through Playwright.

The servers run in subprocesses against the pytest test database, so e2e tests use `transactional_db`: rows the
test writes are committed and visible to the server, and the flush after each test cleans up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database_url(settings_dict: dict[str, Any]) -> str:
    if "postgresql" not in settings_dict["ENGINE"]:
        pytest.skip("e2e tests share the test database with server subprocesses: they need PostgreSQL")
    user = quote(settings_dict.get("USER") or "")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password)}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class HermesServer:
    def __init__(self, base_url: str, env: dict[str, str], procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
        self.base_url = base_url
        self.env = env
        self.procs = procs
        self.logs = logs

    def url(self, path: str) -> str:
        return self.base_url + path


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer {url} in {timeout}s:\n{log.read_text()[-3000:]}")


def _wait_worker(log: Path, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{log.read_text()[-3000:]}")
        if "ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def hermes_server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HermesServer]:
    """Module-scoped: its Celery worker shares the broker with the rest of the suite, so it must be gone before
    other tests enqueue jobs of their own."""
    from django.conf import settings
    from django.db import connection

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("e2e-logs")
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "HERMES_ENV": "test",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "HERMES_PUBLIC_URL": base_url,
        # The server registers its own demo agents (and test agents) on loopback.
        "HERMES_SSRF_ALLOWLIST": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    web_log, worker_log = logs / "web.log", logs / "worker.log"
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hermes_site.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=web_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "hermes_site", "worker", "--pool", "threads", "--concurrency", "4"),
            *("--loglevel", "INFO", "--purge", "--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=ROOT,
        env=env,
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs = [web, worker]
    try:
        _wait_http(base_url + "/api/v1/health/live", web, web_log)
        _wait_worker(worker_log, worker)
        yield HermesServer(base_url, env, procs, logs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("HERMES_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {executable}: apt-get install chromium, or set HERMES_CHROMIUM")
    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM calls are still
    # plain synchronous code, so Django's async-safety guard would refuse them.
    # Module-scoped and restored afterwards, so neither the rest of the suite nor its subprocesses inherit it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _forget_sign_in_attempts() -> None:
    """Every test signs in from 127.0.0.1, and the server counts the console's public POSTs per address and minute
    (20: apps.orgs.quotas.ANONYMOUS_REQUESTS_PER_MINUTE). A suite faster than that got its sign-ins refused now
    and then; each test starts with the server's count for the address cleared."""
    import redis
    from django.conf import settings

    from apps.orgs import quotas

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        stale = list(client.scan_iter(f"{quotas.DEFAULT_KEY_PREFIX}:anon:*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest.fixture
def page(hermes_server: HermesServer, transactional_db: Any, browser: Any) -> Iterator[Any]:
    _forget_sign_in_attempts()
    context = browser.new_context(base_url=hermes_server.base_url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Anything the Content-Security-Policy blocked (an inline script or handler, a foreign source) fails the test:
    # a blocked script breaks a page without raising a page error.
    page.on("console", lambda msg: "Content Security Policy" in msg.text and errors.append(msg.text))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot() -> Any:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
