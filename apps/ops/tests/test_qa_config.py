"""Operator QA round (ops): direct scrapes in production, the worker exporter, the configuration's refusals."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from apps.ops import metrics as ops_metrics
from apps.ops.tests.conftest import WorkerProcess, child_env, serve_wsgi, wait_for
from hermes_site.config import BASE_DIR, ConfigError, load

PRODUCTION = {
    "HERMES_ENV": "production",
    "SECRET_KEY": "qa-" + "abcdefghij0123456789" * 3,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,hermes.example.com",
    "HERMES_PUBLIC_URL": "https://hermes.example.com",
    "EMAIL_URL": "smtp+tls://hermes:pw@smtp.example.com:587",
    "METRICS_TOKEN": "qa-scrape-token",
    "METRICS_ALLOWED_IPS": "",
}


def test_direct_scrape_and_ping_are_not_redirected_to_https_in_production(
    tmp_path: Path, free_port: int, django_db_blocker: Any
) -> None:
    """Production turns SECURE_SSL_REDIRECT on; Prometheus scrapes web:8000 in plain HTTP (deploy/prometheus) and
    the egress diagnostic is called the same way. Both were a 301 to an https:// port that speaks no TLS."""
    bearer = {"Authorization": "Bearer qa-scrape-token"}
    with django_db_blocker.unblock(), serve_wsgi(tmp_path / "gunicorn.log", free_port, **PRODUCTION) as base:
        scrape = httpx.get(f"{base}/metrics", headers=bearer, timeout=10)
        assert scrape.status_code == 200, (scrape.status_code, scrape.headers.get("location"))
        assert "hermes_health_status" in scrape.text
        assert httpx.head(f"{base}/metrics", headers=bearer, timeout=10).status_code == 200
        ping = httpx.post(f"{base}/api/v1/ops/ping", headers=bearer, json={"url": "not a url"}, timeout=10)
        assert ping.status_code == 400, (ping.status_code, ping.headers.get("location"))  # the POST reached the view
        assert httpx.get(f"{base}/api/v1/ops/ping/nope", headers=bearer, timeout=10).status_code == 404
        # Everything else is still sent to https://: the exemption is for the machine endpoints only.
        console = httpx.get(f"{base}/accounts/login/", timeout=10)
        assert console.status_code == 301 and console.headers["location"].startswith("https://")
        assert httpx.get(f"{base}/metricsx", headers=bearer, timeout=10).status_code == 301


@pytest.mark.parametrize("name", ["REDIS_URL", "CELERY_BROKER_URL"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:6379/abc", "has the path '/abc': the path is the database number, a whole number"),
        ("redis://127.0.0.1:6379/10abc", "has the path '/10abc'"),  # redis-py: db 0
        ("redis://127.0.0.1:6379/1/2", "has the path '/1/2'"),  # redis-py: db 12
        ("rediss://127.0.0.1:6380/x", "has the path '/x'"),
        ("redis://", "names no host: a redis:// URL names its server (redis://host:6379/0)."),
        ("redis:///3", "names no host"),  # redis-py: localhost
        ("redis://127.0.0.1:6379/0?db=3", "has the option db='3': give the database number as the path instead"),
        ("unix:///run/redis.sock?db=one", "has db='one': the database number is a whole number (?db=0)."),
        ("unix://", "names no socket"),
    ],
)
def test_a_redis_url_that_redis_py_would_misread_is_one_config_error(name: str, url: str, says: str) -> None:
    """redis-py used database 0 (or 12, or localhost) for what it could not read: another installation's."""
    with pytest.raises(ConfigError) as refused:
        load({name: url})
    assert refused.value.problems == [f"{name}={url!r} {refused.value.problems[0].split(' ', 1)[1]}"]
    assert says in refused.value.problems[0]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/15",
        "redis://127.0.0.1:6379/",
        "redis://redis",
        "redis://:pw@redis:6379/2",
        "rediss://redis:6380/1?ssl_cert_reqs=required",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=3",
    ],
)
def test_redis_urls_that_name_a_host_and_a_database_number_are_accepted(url: str) -> None:
    assert load({"REDIS_URL": url}).redis_url == url
    assert load({"CELERY_BROKER_URL": url})["CELERY_BROKER_URL"] == url


def test_a_rabbitmq_broker_url_keeps_its_virtual_host() -> None:
    # The path of an amqp:// URL is a virtual host, not a database number.
    url = "amqp://guest:guest@rabbit:5672/hermes-prod"
    assert load({"CELERY_BROKER_URL": url}).broker_url == url


def test_doctor_refuses_a_malformed_redis_database_in_one_line() -> None:
    """What the operator saw: `doctor` said `redis ok` for /abc, while everything ran in database 0."""
    env = {**os.environ, "HERMES_ENV": "test", "REDIS_URL": "redis://127.0.0.1:6379/abc"}
    env.pop("CELERY_BROKER_URL", None)
    run = subprocess.run(
        [sys.executable, "manage.py", "doctor"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "hermes: configuration error: REDIS_URL='redis://127.0.0.1:6379/abc' has the path '/abc': the path is the "
        "database number, a whole number (redis://host:6379/0), or nothing for database 0."
    ]


def _features(**changes: bool) -> dict[str, bool]:
    return {**settings.HERMES_FEATURES, **changes}


@override_settings(METRICS_TOKEN="tok", METRICS_ALLOWED_IPS=[])
def test_the_worker_exporter_serves_metrics_at_metrics_only_and_answers_head() -> None:
    """docs/deploy.md: `/metrics` answers HEAD as well as GET. prometheus_client's app as it is answered HEAD with
    405 and any path with the exposition."""
    exporter = ops_metrics.WorkerExporter("127.0.0.1", 0)
    exporter.start()
    bearer = {"Authorization": "Bearer tok"}
    try:
        base = f"http://127.0.0.1:{exporter.port}"
        get = httpx.get(f"{base}/metrics", headers=bearer, timeout=5)
        assert get.status_code == 200 and "hermes_" in get.text
        head = httpx.head(f"{base}/metrics", headers=bearer, timeout=5)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
        for path in ("/", "/anything", "/metrics/x", "/favicon.ico"):
            assert httpx.get(f"{base}{path}", headers=bearer, timeout=5).status_code == 404, path
        assert httpx.head(f"{base}/anything", headers=bearer, timeout=5).status_code == 404
        assert httpx.head(f"{base}/metrics", timeout=5).status_code == 403  # the access policy first, HEAD too
    finally:
        exporter.stop()


def test_the_worker_exporter_is_off_with_the_metrics_feature(free_port: int, caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(HERMES_FEATURES=_features(metrics=False)), caplog.at_level(logging.INFO, "apps.ops.metrics"):
        assert ops_metrics.start_worker_exporter("127.0.0.1", free_port) is None
    assert "worker metrics exporter not started: HERMES_FEATURE_METRICS=false" in caplog.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port}/metrics", timeout=2)


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_the_procfile_way_serves_no_metrics_with_the_feature_off(
    start_worker: Callable[..., WorkerProcess], free_port: int
) -> None:
    """The Procfile always sets CELERY_WORKER_METRICS_PORT (on 0.0.0.0): the flag must still turn it off."""
    worker = start_worker(CELERY_WORKER_METRICS_PORT=str(free_port), HERMES_FEATURE_METRICS="false")
    wait_for(lambda: "worker metrics exporter not started: HERMES_FEATURE_METRICS=false" in worker.output())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port}/metrics", timeout=2)


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("HERMES_TASK_DEADLINE_SECOND", "did you mean HERMES_TASK_DEADLINE_SECONDS? Rename it"),
        ("HERMES_FEDERATION_MAX_ATTEMPT", "did you mean HERMES_FEDERATION_MAX_ATTEMPTS? Rename it"),
        ("HERMES_FIELDKEY", "did you mean HERMES_FIELD_KEY? Rename it"),
        ("HERMES_COLOUR", "correct its name (docs/configuration.md lists every setting) or remove it"),
    ],
)
def test_an_unknown_hermes_variable_is_a_warning_with_a_guess(name: str, fix: str) -> None:
    """It was ignored without a word, and the setting it was meant for kept its default."""
    cfg = load({name: "10"})
    assert (f"{name} is set but is no Hermes setting, so it changes nothing", fix) in cfg.warnings


def test_hermes_variables_of_make_run_the_tests_and_benchmarks_are_no_typo() -> None:
    env = {"HERMES_PORT": "8001", "HERMES_HOST": "0.0.0.0", "HERMES_TEST_AMQP_URL": "amqp://x", "HERMES_CHROMIUM": "c"}
    assert load({**env, "REDIS_URL": "redis://127.0.0.1:6379/0"}).warnings == []


def test_an_unknown_feature_flag_stays_an_error_now_with_a_guess() -> None:
    with pytest.raises(ConfigError) as refused:
        load({"HERMES_FEATURE_METRIC": "false"})
    assert refused.value.problems[0].startswith(
        "HERMES_FEATURE_METRIC is not a known feature flag: did you mean HERMES_FEATURE_METRICS? known flags are "
    )


@pytest.mark.django_db
def test_doctor_and_the_startup_summary_show_a_misspelt_setting() -> None:
    env = child_env(HERMES_TASK_DEADLINE_SECOND="10", LOG_FORMAT="console")
    doctor = subprocess.run(
        [sys.executable, "manage.py", "doctor"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    line = (
        "  warning          HERMES_TASK_DEADLINE_SECOND is set but is no Hermes setting, so it changes nothing — "
        "fix: did you mean HERMES_TASK_DEADLINE_SECONDS? Rename it"
    )
    assert line in doctor.stdout.splitlines(), doctor.stdout + doctor.stderr
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr  # a warning, not a failure
