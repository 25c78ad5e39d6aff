"""API-key authentication + scope check + quota check: overhead per request against the same view without them.

Method (honest about what it measures): Django's WSGI handler is driven in-process by the test `Client`, so every
request goes through the full middleware stack, URL resolution, DRF dispatch and JSON rendering — only the
socket and the WSGI server are left out (they cost the same for both variants). Three views return the same
body:

- `bare`: no authentication, no permission, no throttle (the baseline);
- `key+scope`: `APIKeyAuthentication` (digest lookup of key, org, creator and current role in one query, the
  once-a-minute last-used write) and `OrgActionPermission` (role x scope check for `tasks:read`);
- `key+scope+quota`: the same plus `OrgQuotaThrottle` (one Redis round trip, Lua script) and the rate-limit
  headers — exactly what every API request pays.

Requests are interleaved in random order (so drift in machine load hits every variant alike), after a warm-up,
against a throwaway migrated database (`test_<name>`, dropped afterwards) and the configured Redis under a
private key prefix (deleted afterwards). The org is on the Enterprise plan so the limit is counted, not hit.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import time
import uuid
from typing import Any

import django

# The views below are DRF classes, importable only once Django is set up (bench/__main__ imports us first).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")
django.setup()

from django.urls import path  # noqa: E402
from rest_framework import permissions  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from apps.core.api import OrgScopedMixin  # noqa: E402

TARGET_DELTA_MS = 2.0
REQUESTS_PER_VARIANT = 3000
WARMUP = 200


class Bare(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class KeyAndScope(OrgScopedMixin, APIView):  # type: ignore[misc]
    read_action = "tasks:read"
    throttle_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class KeyScopeQuota(KeyAndScope):
    throttle_classes = APIView.throttle_classes  # the project default: OrgQuotaThrottle


urlpatterns = [
    path("bench/bare", Bare.as_view()),
    path("bench/key-scope", KeyAndScope.as_view()),
    path("bench/key-scope-quota", KeyScopeQuota.as_view()),
]
VARIANTS = {"bare": "/bench/bare", "key+scope": "/bench/key-scope", "key+scope+quota": "/bench/key-scope-quota"}


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(client: Any, headers: dict[str, str]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and this process's CPU time per request, in ms, per variant."""
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for name, url in VARIANTS.items():
        for _ in range(WARMUP):
            assert client.get(url, headers=headers).status_code == 200, name
    schedule = [name for name in VARIANTS for _ in range(REQUESTS_PER_VARIANT)]
    random.Random(42).shuffle(schedule)
    for name in schedule:
        url = VARIANTS[name]
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url, headers=headers)
        timings[name].append((time.perf_counter() - start) * 1000)
        cpu[name].append((time.process_time() - start_cpu) * 1000)
        assert response.status_code == 200, (name, response.status_code, response.content)
    return timings, cpu


def _round_trips() -> tuple[float, float]:
    """Median round trip of a trivial query and a Redis PING on the same connections, in ms."""
    from django.db import connection

    from apps.orgs import quotas

    def median_ms(call: Any) -> float:
        samples = []
        for _ in range(500):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    with connection.cursor() as cursor:
        db = median_ms(lambda: cursor.execute("SELECT 1"))
    return db, median_ms(quotas._gate.client().ping)


def run() -> str:
    from django.db import connection
    from django.test import Client, override_settings

    from apps.core.permissions import Access, Role
    from apps.orgs import quotas
    from apps.orgs.actions import create_api_key, create_organization
    from apps.orgs.models import Plan

    # A database of our own (not the test suite's test_<name>), created, migrated and dropped by this run.
    test_settings = connection.settings_dict.setdefault("TEST", {})
    test_settings["NAME"] = f"bench_{connection.settings_dict['NAME']}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    prefix = f"hermes-bench:{uuid.uuid4().hex}"
    quotas.KEY_PREFIX = prefix
    try:
        with override_settings(ROOT_URLCONF=__name__, DEBUG=False):
            from django.contrib.auth import get_user_model

            user = get_user_model().objects.create_user("bench@example.test", "bench-password-1")
            org = create_organization(user=user, name="Bench", slug="bench", plan=Plan.ENTERPRISE)
            issued = create_api_key(
                access=Access(org=org, role=Role.OWNER, user=user), name="bench", scopes=["tasks:read"]
            )
            headers = {"Authorization": f"Bearer {issued.plaintext}"}
            load_before = os.getloadavg()[0]
            # Per-request INFO logs cost every variant the same; silenced so the output stays readable.
            logging.disable(logging.INFO)
            try:
                timings, cpu = _measure(Client(), headers)
            finally:
                logging.disable(logging.NOTSET)
            db_rtt, redis_rtt = _round_trips()
            load_after = os.getloadavg()[0]
            vendor = connection.vendor
    finally:
        try:
            client = quotas._gate.client()
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
        except Exception:  # noqa: S110 - cleanup of a benchmark namespace must not hide the result
            pass
        connection.creation.destroy_test_db(old_name, verbosity=0)

    base = statistics.median(timings["bare"])
    base_cpu = statistics.median(cpu["bare"])
    rows = []
    for name, samples in timings.items():
        p50, cpu50 = statistics.median(samples), statistics.median(cpu[name])
        delta = "—" if name == "bare" else f"+{p50 - base:.2f} ms"
        cpu_delta = "—" if name == "bare" else f"+{cpu50 - base_cpu:.2f} ms"
        rows.append(
            f"| {name} | {p50:.2f} | {_percentile(samples, 0.9):.2f} | {_percentile(samples, 0.99):.2f} | {delta} "
            f"| {cpu50:.2f} | {cpu_delta} |"
        )
    full_delta = statistics.median(timings["key+scope+quota"]) - base
    verdict = "meets" if full_delta <= TARGET_DELTA_MS else "MISSES"
    return (
        "## API-key authentication, scope and quota overhead (`bench/auth.py`)\n\n"
        f"{REQUESTS_PER_VARIANT} requests per variant, interleaved in random order after {WARMUP} warm-up "
        f"requests each; in-process WSGI (Django test client, full middleware stack; INFO request logs off), "
        f"database: {vendor}, "
        f"quota counters: the configured Redis. 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after, on {os.cpu_count()} cores (a load above the core count means every database "
        "or Redis round trip risks waiting for a time slice, which inflates the guarded variants and not the "
        "bare one). Times in milliseconds per request.\n\n"
        "| Variant | p50 | p90 | p99 | p50 delta vs bare | CPU p50 (this process) | CPU delta |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + f"\n\nTarget: authentication + scope + quota add at most {TARGET_DELTA_MS:.0f} ms at p50 over the same "
        f"view without them. Measured: +{full_delta:.2f} ms — {verdict} the target. The added cost is one indexed "
        "query (key, org, creator and the creator's current role in one row) and one Redis round trip; "
        "`last_used_at` is written at most once a minute, so it is not in the steady state. Measured in the same "
        f"run: a `SELECT 1` round trip takes {db_rtt:.2f} ms and a Redis PING {redis_rtt:.2f} ms (medians); the "
        "CPU columns are the Python work per request in this process (the query, the Lua script and the "
        "servers' own work are not in them).\n"
    )
