from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from apps.core.startup import summary_lines
from hermes_site.boot import explain
from hermes_site.config import BASE_DIR


def _dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.mark.django_db
def test_summary_names_every_part() -> None:
    text = "\n".join(summary_lines("doctor"))
    for part in ("environment", "database", "redis", "broker", "channel_layer", "features"):
        assert part in text
    assert "migrations applied" in text


@pytest.mark.django_db
def test_doctor_reports_and_exits_non_zero_when_redis_is_down() -> None:
    dead = _dead_redis_url()
    out = io.StringIO()
    with override_settings(REDIS_URL=dead, CELERY_BROKER_URL=dead), pytest.raises(CommandError, match="redis"):
        call_command("doctor", stdout=out)
    text = out.getvalue()
    assert "redis            DOWN" in text
    assert "warning          redis is down" in text and "fix:" in text


@pytest.mark.django_db
def test_doctor_succeeds_when_everything_is_up() -> None:
    out = io.StringIO()
    call_command("doctor", stdout=out)
    assert "DOWN" not in out.getvalue()


def test_doctor_process_reports_unreachable_database() -> None:
    env = {
        "HERMES_ENV": "dev",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "REDIS_URL": _dead_redis_url(),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "doctor"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "database         DOWN OperationalError" in result.stdout
    # psycopg's two-line message (a tab-indented hint) stays on the probe's line.
    (database_line,) = [line for line in result.stdout.splitlines() if line.startswith("  database ")]
    assert "Connection refused; Is the server running" in database_line
    # The same verdict as `health`: readiness first, the rest labelled.
    verdict = "not ready: database, redis, broker; also down (not readiness checks): channel_layer"
    assert verdict in result.stderr
    assert "Traceback" not in result.stderr


def test_boot_failures_are_explained() -> None:
    message = explain("asgi", ModuleNotFoundError("No module named 'foo'"))
    assert "failed to start" in message and "make install" in message


def test_web_process_serves_liveness_while_dependencies_are_down(free_port: int) -> None:
    """Idempotent startup: with Postgres and Redis unreachable the ASGI server still starts, says so, and
    serves /api/v1/health/live."""
    dead = _dead_redis_url()
    env = {
        "HERMES_ENV": "dev",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "REDIS_URL": dead,
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hermes_site.asgi:application", "--port", str(free_port)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        import httpx

        deadline = time.monotonic() + 45
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{free_port}/api/v1/health/live", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200
        while time.monotonic() < deadline and not any("features" in line for line in lines):
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=5)
    output = "".join(lines)
    assert "database         DOWN" in output
    assert "redis            DOWN" in output
    # Graceful SIGTERM: uvicorn drains and then re-raises the signal (exit by SIGTERM, not a crash).
    assert "Finished server process" in output
    assert proc.returncode in (0, -15), output


def test_flush_is_refused_in_production() -> None:
    with override_settings(HERMES_ENV="production"), pytest.raises(CommandError, match="force-production"):
        call_command("flush", interactive=False)


_PRINT_SUMMARY = (
    "import django; django.setup(); from apps.core.startup import print_summary; print_summary('web (wsgi)')"
)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_startup_summary_follows_log_format(tmp_path: Any, log_format: str) -> None:
    """With LOG_FORMAT=json the summary was plain text among the JSON lines on stderr: pipelines that parse JSON
    dropped it, configuration warnings included."""
    env = {
        "HERMES_ENV": "dev",
        "LOG_FORMAT": log_format,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'hermes.sqlite3'}",  # REDIS_URL unset: a configuration warning
        "DJANGO_SETTINGS_MODULE": "hermes_site.settings",
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [sys.executable, "-c", _PRINT_SUMMARY], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    if log_format == "console":
        assert lines[0].startswith("Hermes ") and lines[0].endswith(" — web (wsgi)"), run.stderr
        assert any(line.startswith("  warning          REDIS_URL is not set — fix: ") for line in lines), run.stderr
        return
    records = [json.loads(line) for line in lines]  # every line is JSON
    summary = [r for r in records if r.get("event") == "startup_summary"]
    assert summary[0]["message"].endswith(" — web (wsgi)") and summary[0]["role"] == "web (wsgi)", summary
    assert summary[0]["logger"] == "hermes.startup" and summary[0]["level"] == "INFO"
    (warning,) = [r for r in summary if r.get("problem") == "REDIS_URL is not set"]
    assert warning["level"] == "WARNING" and warning["fix"] and warning["message"].startswith("warning REDIS_URL")
    checks = {r["check"]: r for r in summary if "check" in r}
    assert {"database", "redis", "broker", "channel_layer"} <= set(checks)
    assert all(r["check_status"] in ("ok", "down") for r in checks.values())
