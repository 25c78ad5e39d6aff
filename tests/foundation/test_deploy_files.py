"""The deploy files agree with each other: docker-compose.yml cannot run where Hermes is built (no Docker engine),
so what can drift silently is pinned here. The nginx configuration itself is exercised by hand in front of real
servers (docs/deploy.md "Docker Compose")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "websocket", "worker", "beat")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_runs_every_procfile_process_after_migrations() -> None:
    services = compose()["services"]
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    for name in APP_SERVICES:
        program = re.sub(r"^(\w+=\S+ )+", "", procfile[name].strip()).split()[0]
        assert services[name]["command"].split()[0] == program, name
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["migrate"]["command"] == "python manage.py migrate --noinput"
    assert "migrate" not in services["migrate"]["depends_on"]


def test_the_proxy_routes_what_needs_asgi_to_the_websocket_process() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstream = {name: target for name, target in re.findall(r"upstream (\w+)\s*\{\s*server ([\w.:]+);", conf)}
    routes = dict(re.findall(r"location (?:~ )?(\S+) \{[^}]*?proxy_pass http://(\w+);", conf))
    assert upstream["hermes_web"] == "web:8000" and upstream["hermes_ws"] == "websocket:8001"
    assert routes == {
        "/ws/": "hermes_ws",
        "/demo-agents/": "hermes_ws",
        "^/api/v1/tasks/[^/]+/stream$": "hermes_ws",
        "/": "hermes_web",
    }
    # Containers reach the demo agents at HERMES_PUBLIC_URL: the proxy must listen on its port under its alias.
    proxy = compose()["services"]["proxy"]
    public = compose()["x-hermes"]["environment"]["HERMES_PUBLIC_URL"]
    found = re.search(r"http://([\w.]+):(\d+)", public)
    assert found, public
    host, port = found.groups()
    assert f"listen {port};" in conf and proxy["ports"] == [f"{port}:{port}"]
    assert host in proxy["networks"]["default"]["aliases"]
    assert (
        proxy["networks"]["default"]["ipv4_address"] == compose()["x-hermes"]["environment"]["HERMES_TRUSTED_PROXIES"]
    )


def _interpolated(environment: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """The environment compose gives a container: `${VAR:-default}` and `${VAR:?message}` read from `.env`."""

    def value(found: re.Match[str]) -> str:
        name, operator, rest = found.groups()
        if name in dotenv:
            return dotenv[name]
        assert operator == ":-", f"{name} must be set in .env ({rest})"
        return rest

    return {key: re.sub(r"\$\{(\w+)(:[-?])([^}]*)\}", value, str(raw)) for key, raw in environment.items()}


def test_compose_passes_the_production_configuration_checks() -> None:
    """Production refuses an unset HERMES_PUBLIC_URL (links in mail would point at loopback): the compose file
    sets every value production requires, so `docker compose up` with only SECRET_KEY in .env still boots."""
    from hermes_site.config import load

    dotenv = {"SECRET_KEY": "k3y-" + "abcdefghij" * 6}
    for name in APP_SERVICES:
        service = compose()["services"][name]
        environment = service.get("environment", compose()["x-hermes"]["environment"])
        config = load(_interpolated(environment, dotenv))
        assert config.env == "production"
        # The local trial prints mail to the container log; doctor says so, with the fix.
        assert [problem for problem, _ in config.warnings] == [
            "EMAIL_URL is consolemail:// in production: invitation and password-reset mail is printed to the "
            "process output (reset links included, past the log redaction), never sent"
        ], name


def test_gunicorn_refuses_a_metrics_directory_that_is_a_file_in_one_line(
    monkeypatch: Any, tmp_path: Path, capsys: Any
) -> None:
    """`on_starting` made the directory before anything checked the variable: a FileExistsError traceback. The
    master now validates the whole configuration first, so the refusal is the configuration's own line."""
    import runpy

    import pytest

    hooks = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    a_file = tmp_path / "hostname"
    a_file.write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(a_file))
    with pytest.raises(SystemExit) as refused:
        hooks["on_starting"](None)
    assert refused.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"hermes: configuration error: PROMETHEUS_MULTIPROC_DIR='{a_file}' must be ")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    hooks["on_starting"](None)
    assert (tmp_path / "metrics").is_dir()


def test_gunicorn_refuses_a_bad_configuration_once_before_forking(free_port: int) -> None:
    """Only the workers read the configuration: each printed the error and exited 1, and the master booted a new
    one forever (133 boots a minute) instead of exiting 1 like uvicorn, the Celery worker, beat and manage.py."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HERMES_TASK_POLL_SECONDS": "abc"}
    run = subprocess.run(
        [
            sys.executable, "-m", "gunicorn", "hermes_site.wsgi:application",
            "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{free_port}",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("hermes: ")]
    assert errors == [
        "hermes: configuration error: HERMES_TASK_POLL_SECONDS='abc' must be a number of seconds greater than 0 and "
        "at most 31536000."
    ], run.stderr
    assert "Booting worker" not in run.stderr and "Listening at" not in run.stderr, run.stderr


def test_gunicorn_writes_json_lines_with_log_format_json(free_port: int) -> None:
    """LOG_FORMAT=json, and gunicorn's startup lines ("Starting gunicorn", "Listening at", "Booting worker") were
    plain text among the application's JSON lines."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    # Python's warnings are no log records (whitenoise's "No directory at: staticfiles/" in a checkout that has not
    # run collectstatic): out of the way of "every line is JSON".
    env = {**os.environ, "LOG_FORMAT": "json", "PYTHONWARNINGS": "ignore"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "hermes_site.wsgi:application",
            "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{free_port}", "--workers", "1",
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{free_port}/api/v1/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=60)
    lines = [json.loads(line) for line in (stdout + stderr).splitlines()]  # every line is JSON
    messages = [(line["logger"], line["message"]) for line in lines]
    assert any(logger == "gunicorn.error" and message.startswith("Listening at") for logger, message in messages)
    assert not any(logger == "gunicorn.access" for logger, _ in messages)  # hermes.request has the request line
