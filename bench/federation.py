"""Federation delivery between two real Hermes instances, next to a plain loop of signed HTTP POSTs.

Both instances run as in production (gunicorn web, Celery worker + beat, own Postgres database and Redis), set up
by tests/federation/cluster.py. Measured in one run:

1. Baseline: the bench process POSTs Standard-Webhooks-signed envelopes to the receiving instance's federation
   endpoint in a tight loop from as many threads as the sending worker has. The envelopes are replays of one
   already-received message, so the receiver verifies the signature, finds the message in its dedup index and
   answers the original receipt (plus its audit row): signing, HTTP and verification, without the pipeline's
   persistence.
2. Sustained throughput of the pipeline: N messages queued on the sender while its worker is stopped, then the
   worker drains them: outbox transaction, Celery job, atomic claim, signed POST, receiver dedup + inbox insert +
   policy + audit, signed receipt verified and persisted, attempt log. Rate = N / (last receipt - first attempt).
3. Enqueue -> receipt latency at a fixed 50 messages/s for 20 s: `delivered_at - queued_at` per message.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import httpx

from apps.federation import signing
from tests.federation.cluster import Instance, drop_databases, prepare_databases, wait_for

SECRET = signing.encode_secret(b"bench-link-secret-0123456789abcd")
WORKER_CONCURRENCY = 8
BURST = 1000
RATE, RATE_SECONDS = 50, 20
BASELINE_SECONDS = 10


def _seed(instance: Instance, spec: dict[str, Any]) -> None:
    instance.run("-m", "tests.federation.seed_instance", json.dumps(spec))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _baseline(berlin: Instance) -> tuple[float, float, float]:
    url = f"{berlin.url}/api/v1/federation/receive/paris"
    secret = signing.decode_secret(SECRET)
    message_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "id": message_id,
            "type": "message",
            "sender": {"org": "acme", "agent": None},
            "recipient": {"org": "globex", "agent": None},
            "payload": {"n": 0},
            "correlation_id": None,
        },
        separators=(",", ":"),
    ).encode()
    with httpx.Client() as client:  # store it once; every request below is a signed replay
        client.post(url, content=body, headers=signing.sign_headers(message_id, body, [secret]))
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + BASELINE_SECONDS

    def loop() -> None:
        mine: list[float] = []
        with httpx.Client() as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                headers = {"content-type": "application/json", **signing.sign_headers(message_id, body, [secret])}
                response = client.post(url, content=body, headers=headers)
                response.raise_for_status()
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(WORKER_CONCURRENCY)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return len(latencies) / elapsed, _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.95) * 1000


def _delivered_times(paris: Instance, ids: list[str]) -> list[tuple[float, float, float]]:
    rows = paris.sql(
        "SELECT extract(epoch from o.queued_at), extract(epoch from o.delivered_at), "
        "extract(epoch from (SELECT min(a.created_at) FROM federation_deliveryattempt a WHERE a.outbox_id = o.id)) "
        "FROM federation_outbox o WHERE o.message_id = ANY(%s::uuid[]) AND o.status = 'delivered'",
        (ids,),
    )
    return [(float(q), float(d), float(a)) for q, d, a in rows]


def _all_delivered(paris: Instance, ids: list[str]) -> bool:
    return len(_delivered_times(paris, ids)) == len(ids)


def run() -> str:
    load_before = os.getloadavg()[0]
    names = ["benchparis", "benchberlin"]
    workdir = Path(mkdtemp(prefix="hermes-bench-federation-"))
    prepare_databases(names)
    production_like = {"LOG_LEVEL": "WARNING", "HERMES_FEDERATION_SWEEP_INTERVAL": "5"}
    paris = Instance("benchparis", workdir, production_like)
    berlin = Instance("benchberlin", workdir, production_like)
    try:
        _seed(paris, {
            "orgs": ["acme"],
            "peers": [{"name": "berlin", "base_url": berlin.url, "local_name": "paris", "secret": SECRET}],
            "policies": [{"org": "acme", "remote": "*@berlin", "effect": "allow"}],
        })  # fmt: skip
        _seed(berlin, {
            "orgs": ["globex"],
            "peers": [{"name": "paris", "base_url": paris.url, "local_name": "berlin", "secret": SECRET}],
            "policies": [{"org": "globex", "remote": "*@paris", "effect": "allow"}],
        })  # fmt: skip
        berlin.start(web_workers=2)
        paris.spawn(
            "-m", "gunicorn", "hermes_site.wsgi:application", "--bind", f"127.0.0.1:{paris.port}",
            "--workers", "1", "--threads", "4", "--worker-class", "gthread",
            log="web.log",
        )  # fmt: skip
        wait_for(paris._live, 60, "paris web")

        base_rate, base_p50, base_p95 = _baseline(berlin)

        # Sustained throughput: queue with the worker stopped, then let one worker drain the backlog.
        burst = paris.manage("federation_send", "acme", "globex@berlin", "--count", str(BURST)).split()
        worker = paris.start_worker(concurrency=WORKER_CONCURRENCY)
        wait_for(lambda: _all_delivered(paris, burst), 600, "burst drained", interval=0.5)
        times = _delivered_times(paris, burst)
        drain = max(d for _, d, _ in times) - min(a for _, _, a in times)
        pipeline_rate = BURST / drain

        # Latency at a fixed rate, the worker already warm.
        paced = paris.manage(
            "federation_send", "acme", "globex@berlin", "--count", str(RATE * RATE_SECONDS), "--rate", str(RATE)
        ).split()
        wait_for(lambda: _all_delivered(paris, paced), 300, "paced messages delivered", interval=0.5)
        latencies = [(d - q) * 1000 for q, d, _ in _delivered_times(paris, paced)]
        p50, p95 = statistics.median(latencies), _percentile(latencies, 0.95)
        duplicates = berlin.sql(
            "SELECT count(*) FROM federation_inboxentry WHERE message_id = ANY(%s::uuid[])", (burst + paced,)
        )[0][0]
        assert duplicates == len(burst) + len(paced), "every message must be in the inbox exactly once"
        assert worker.poll() is None
    finally:
        paris.stop()
        berlin.stop()
        drop_databases(names)

    ratio = pipeline_rate / base_rate
    load_after = os.getloadavg()[0]
    return "\n".join(
        [
            "## Federation delivery between two instances (`bench/federation.py`)",
            "",
            "Two Hermes instances on loopback, each with its own Postgres database and embedded Redis. Receiver: "
            "gunicorn, 2 workers x 8 threads. Sender: one Celery worker, "
            f"{WORKER_CONCURRENCY} threads. Baseline, same run, same receiver process: {WORKER_CONCURRENCY} client "
            "threads POST Standard-Webhooks-signed envelopes in a tight loop; each is a replay of one stored message, "
            "so the receiver verifies the signature, finds it in the dedup index and answers the original receipt "
            "(no queue, no sender-side persistence, no inbox insert, and no rate-limit count, body parse or audit "
            "row: a duplicate is answered from the dedup index right after the signature check). Pipeline: the "
            "sender's outbox transaction, "
            "Celery job, atomic claim, signed POST, receiver dedup + policy + inbox + audit, signed receipt verified "
            f"and persisted, attempt log. 1-minute load average {load_before:.1f} before and {load_after:.1f} after, "
            "on 2 cores (a load above 2 means the figures are inflated by CPU contention).",
            "",
            "| Measure | Federation pipeline | Baseline: signed POST loop | Target | Result |",
            "| --- | --- | --- | --- | --- |",
            f"| Sustained throughput ({BURST} queued messages drained) | {pipeline_rate:.1f} msg/s "
            f"| {base_rate:.1f} req/s | >= 1/4 of baseline | {ratio:.2f} of baseline: "
            f"{'met' if ratio >= 0.25 else 'NOT met'} |",
            f"| Enqueue -> receipt at {RATE} msg/s for {RATE_SECONDS} s, p50 | {p50:.0f} ms "
            f"| {base_p50:.0f} ms per request | - | - |",
            f"| Enqueue -> receipt at {RATE} msg/s, p95 | {p95:.0f} ms | {base_p95:.0f} ms per request | < 250 ms "
            f"| {'met' if p95 < 250 else 'NOT met'} |",
            "",
            f"All {BURST + RATE * RATE_SECONDS} messages reached the receiver's inbox exactly once.",
        ]
    )
