"""What the probes tell an operator: one-line reasons and a fix that fits the configuration in hand."""

from __future__ import annotations

import dataclasses

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings

from apps.core.checks import HealthReport, Probe, error_line, probe_broker, probe_redis, timed_probe

# What psycopg says for a database that is not there (libpq: a hint line per address tried).
LIBPQ_REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?\n"
    'connection to server at "::1", port 1 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?\n"
)


def test_a_driver_error_becomes_one_line_with_nothing_lost() -> None:
    line = error_line(OperationalError(LIBPQ_REFUSED))
    assert "\n" not in line and "\t" not in line
    assert line == (
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused; '
        "Is the server running on that host and accepting TCP/IP connections?; "
        'connection to server at "::1", port 1 failed: Connection refused'
    )
    assert error_line(OperationalError()) == "OperationalError"  # no text at all: at least say what it was


def test_a_failing_probe_reports_the_driver_error_in_one_line() -> None:
    def refused() -> tuple[bool, str, dict[str, object]]:
        raise OperationalError(LIBPQ_REFUSED)

    probe = timed_probe("database", refused, "check DATABASE_URL")
    assert not probe.ok and "\n" not in probe.detail
    assert (
        probe.detail.startswith("OperationalError: connection failed: ") and "; Is the server running" in probe.detail
    )


@pytest.mark.parametrize(
    ("url", "address"),
    [("redis://127.0.0.1:1/6", "127.0.0.1:1"), ("redis://nohost.invalid:6379/6", "nohost.invalid:6379")],
)
def test_a_dead_external_redis_is_not_told_to_start_the_embedded_one(url: str, address: str) -> None:
    with override_settings(REDIS_URL=url, CELERY_BROKER_URL=url, REDIS_IS_EMBEDDED=False):
        redis, broker = probe_redis(), probe_broker()
    assert not redis.ok and redis.fix == f"start the Redis at {address} or fix REDIS_URL"
    assert "embedded" not in redis.fix and "make run" not in redis.fix
    # The broker defaults to REDIS_URL: it is the same server, whose line carries the fix.
    assert not broker.ok and broker.fix == "the broker is the Redis of REDIS_URL: see the redis line"


def test_the_redis_fix_fits_the_embedded_server_and_an_unset_redis_url() -> None:
    dead = "redis://127.0.0.1:1/0"
    with override_settings(REDIS_URL=dead, CELERY_BROKER_URL=dead, REDIS_IS_EMBEDDED=True):
        assert "make run" in probe_redis().fix
    unset = dataclasses.replace(settings.CONFIG, redis_url=None)
    with override_settings(REDIS_URL=dead, CELERY_BROKER_URL=dead, REDIS_IS_EMBEDDED=False, CONFIG=unset):
        fix = probe_redis().fix
    assert fix.startswith("REDIS_URL is not set and nothing answers at 127.0.0.1:1") and "make run" in fix
    # A broker of its own is named by its own address.
    with override_settings(CELERY_BROKER_URL="amqp://guest@127.0.0.1:1//"):
        assert probe_broker().fix == "start the broker at 127.0.0.1:1 or fix CELERY_BROKER_URL"


def test_the_verdict_separates_readiness_from_the_rest() -> None:
    def probes(*down: str) -> HealthReport:
        names = ("database", "redis", "broker", "channel_layer", "workers")
        return HealthReport([Probe(name, name not in down, "") for name in names])

    assert probes("redis", "broker", "channel_layer").verdict() == (
        "not ready: redis, broker; also down (not readiness checks): channel_layer"
    )
    assert probes("workers").verdict() == "ready, but down (not readiness checks): workers"
    assert probes().verdict() == "ready"
