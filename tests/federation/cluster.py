"""Two real Hermes instances on loopback for the federation integration tests.

Each instance has its own Postgres database (hermes_federation_<name>, cloned from a freshly migrated template),
its own embedded Redis (broker + cache), a gunicorn web process and a Celery worker with embedded beat — the
processes a deployment runs. The test process talks to them over HTTP, through `manage.py`, and reads their
databases directly for assertions.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from hermes_site.config import BASE_DIR
from hermes_site.embedded import _free_port, start_redis, stop_redis

# Short retry settings keep the chaos tests fast; the production defaults are in docs/configuration.md.
FAST_RETRIES = {
    "HERMES_FEDERATION_RETRY_BASE": "0.2",
    "HERMES_FEDERATION_RETRY_MAX_DELAY": "1",
    "HERMES_FEDERATION_MAX_ATTEMPTS": "12",
    "HERMES_FEDERATION_TIMEOUT": "1",
    "HERMES_FEDERATION_SWEEP_INTERVAL": "1",
}


def _admin_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    return base.rsplit("/", 1)[0] + "/postgres"


def _db_url(name: str) -> str:
    return _admin_url().rsplit("/", 1)[0] + "/" + name


def _admin(sql: str) -> None:
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def db_prefix() -> str:
    """hermes_federation in CI (the DATABASE_URL's name without `test_`), so databases stay in our namespace."""
    name = os.environ.get("DATABASE_URL", "/hermes").rsplit("/", 1)[1] or "hermes"
    return name.removeprefix("test_")


class Instance:
    def __init__(self, name: str, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.db_name = f"{db_prefix()}_{name}"
        self.db_url = _db_url(self.db_name)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_url, self.redis_proc = start_redis(directory=self.workdir / "redis")
        self.worker_metrics_port = _free_port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "HERMES_ENV": "test",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HERMES_PUBLIC_URL": self.url,
            "HERMES_SSRF_ALLOWLIST": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "console",
            # The worker serves its own Prometheus metrics (apps/ops): retries and deliveries are counted there.
            "CELERY_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "METRICS_TOKEN": "cluster-metrics",
            **FAST_RETRIES,
            **(extra_env or {}),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    # --- processes ---
    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, *args], cwd=BASE_DIR, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def manage(self, *args: str, check: bool = True) -> str:
        return self.run("manage.py", *args, check=check)

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        proc = subprocess.Popen([sys.executable, *args], cwd=BASE_DIR, env=self.env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def start(self, *, web_workers: int = 1, asgi: bool = False) -> None:
        """gunicorn (WSGI), as production serves HTTP; or uvicorn (ASGI) when the instance must also serve the
        built-in demo agents (they are an ASGI app mounted by hermes_site.asgi)."""
        if asgi:
            self.spawn(
                "-m", "uvicorn", "hermes_site.asgi:application", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning",
                log="web.log",
            )  # fmt: skip
        else:
            self.spawn(
                "-m", "gunicorn", "hermes_site.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(web_workers), "--threads", "8",
                "--worker-class", "gthread", "--graceful-timeout", "5",
                log="web.log",
            )  # fmt: skip
        self.start_worker()
        wait_for(lambda: self._live(), 60, f"{self.name} web")

    def start_worker(self, concurrency: int = 4) -> subprocess.Popen[bytes]:
        return self.spawn(
            "-m", "celery", "-A", "hermes_site", "worker", "-B", "--pool", "threads",
            "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--schedule", str(self.workdir / "beat-schedule"), "--without-heartbeat", "--without-gossip",
            "--without-mingle",
            log="worker.log",
        )  # fmt: skip

    def _live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, labels: dict[str, str] | None = None, *, worker: bool = True) -> float:
        """A sample from the worker's exporter (or the web process's /metrics); 0 when absent."""
        url = f"http://127.0.0.1:{self.worker_metrics_port}/metrics" if worker else f"{self.url}/metrics"
        text = httpx.get(url, headers={"Authorization": "Bearer cluster-metrics"}, timeout=5).text
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += sample.value
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        stop_redis(self.redis_proc, directory=self.workdir / "redis")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("*.log"))
        )

    # --- database reads for assertions ---
    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def outbox(self, ids: list[str]) -> dict[str, str]:
        rows = self.sql(
            "SELECT m.id::text, o.status FROM federation_outbox o JOIN federation_message m ON m.id = o.message_id "
            "WHERE m.id = ANY(%s::uuid[])",
            (ids,),
        )
        return dict(rows)  # type: ignore[arg-type]

    def inbox_counts(self, ids: list[str]) -> dict[str, int]:
        rows = self.sql(
            "SELECT message_id::text, count(*) FROM federation_inboxentry WHERE message_id = ANY(%s::uuid[]) "
            "GROUP BY message_id",
            (ids,),
        )
        return dict(rows)  # type: ignore[arg-type]

    def audit(self, event: str, since_id: int = 0) -> list[tuple[Any, ...]]:
        return self.sql(
            "SELECT id, message_id::text, reason FROM federation_federationauditevent WHERE event = %s AND id > %s "
            "ORDER BY id",
            (event, since_id),
        )

    def last_audit_id(self) -> int:
        return int(self.sql("SELECT coalesce(max(id), 0) FROM federation_federationauditevent")[0][0])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def prepare_databases(names: list[str]) -> None:
    """Migrate one template database, then clone it per instance (a clone takes a fraction of a migrate)."""
    template = f"{db_prefix()}_template"
    for name in [*names, "template"]:
        _admin(f'DROP DATABASE IF EXISTS "{db_prefix()}_{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{template}"')
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HERMES_ENV": "test",
        "DATABASE_URL": _db_url(template),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"], cwd=BASE_DIR, env=env, check=True,
        capture_output=True, timeout=300,
    )  # fmt: skip
    for name in names:
        _admin(f'CREATE DATABASE "{db_prefix()}_{name}" TEMPLATE "{template}"')


def drop_databases(names: list[str]) -> None:
    for name in [*names, "template"]:
        _admin(f'DROP DATABASE IF EXISTS "{db_prefix()}_{name}" WITH (FORCE)')
