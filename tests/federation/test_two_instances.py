"""Two real Hermes instances (paris and berlin) on loopback: separate databases and Redis, gunicorn web processes
and Celery workers with beat, real HTTP. Paris reaches berlin through a fault-injecting proxy.

Addresses: paris's `acme` writes to `globex@berlin`; berlin's `globex` writes back to `acme@paris`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from apps.federation import signing
from hermes_site.config import BASE_DIR
from tests.federation.chaos import ChaosProxy
from tests.federation.cluster import Instance, drop_databases, prepare_databases, wait_for

pytestmark = pytest.mark.slow

S1 = signing.encode_secret(b"link-secret-one-0123456789abcdef")
S2 = signing.encode_secret(b"link-secret-two-0123456789abcdef")


@dataclass
class Pair:
    paris: Instance
    berlin: Instance
    proxy: ChaosProxy
    api_key: str = ""
    secret: str = S1

    def send(self, count: int, *, sender: Instance | None = None, recipient: str = "globex@berlin") -> list[str]:
        sender = sender or self.paris
        org = "acme" if sender is self.paris else "globex"
        out = sender.manage(
            "federation_send", org, recipient, "--count", str(count), "--payload", '{"n": {n}}'
        )  # fmt: skip
        return out.split()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir: Path = tmp_path_factory.mktemp("federation-pair")
    prepare_databases(["paris", "berlin"])
    paris, berlin = Instance("paris", workdir), Instance("berlin", workdir)
    proxy = ChaosProxy(berlin.port, hold_seconds=1.5)
    try:
        seeds = {
            paris: {
                "orgs": ["acme"],
                "api_keys": ["acme"],
                "peers": [{"name": "berlin", "base_url": f"http://127.0.0.1:{proxy.port}", "local_name": "paris",
                           "secret": S1}],
                "policies": [{"org": "acme", "remote": "*@berlin", "effect": "allow"}],
            },
            berlin: {
                "orgs": ["globex"],
                "demo_agents": ["globex"],
                "peers": [{"name": "paris", "base_url": paris.url, "local_name": "berlin", "secret": S1}],
                "policies": [{"org": "globex", "remote": "*@paris", "effect": "allow"}],
            },
        }  # fmt: skip
        seeders = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.federation.seed_instance", json.dumps(spec)],
                cwd=BASE_DIR,
                env=instance.env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for instance, spec in seeds.items()
        ]
        outputs = [p.communicate(timeout=120)[0] for p in seeders]
        assert all(p.returncode == 0 for p in seeders), outputs
        paris.start()
        berlin.start(asgi=True)  # berlin also serves its demo agents (the executor of cross-org tasks)
        yield Pair(paris, berlin, proxy, api_key=json.loads(outputs[0].splitlines()[-1])["api_keys"]["acme"])
    finally:
        proxy.close()
        for instance in (paris, berlin):
            instance.stop()
        drop_databases(["paris", "berlin"])


def delivered(instance: Instance, ids: list[str], statuses: tuple[str, ...] = ("delivered",)) -> bool:
    states = instance.outbox(ids)
    return len(states) == len(ids) and all(s in statuses for s in states.values())


def wait_delivered(pair: Pair, ids: list[str], timeout: float = 90, sender: Instance | None = None) -> None:
    sender = sender or pair.paris
    try:
        wait_for(lambda: delivered(sender, ids), timeout, f"{len(ids)} deliveries")
    except AssertionError:
        print(sender.outbox(ids), pair.paris.logs(), pair.berlin.logs(), sep="\n")
        raise


def test_messages_and_receipts_flow_both_ways(pair: Pair) -> None:
    pair.proxy.set("pass")
    ids = pair.send(10)
    back = pair.send(5, sender=pair.berlin, recipient="acme@paris")
    wait_delivered(pair, ids)
    wait_delivered(pair, back, sender=pair.berlin)
    assert pair.berlin.inbox_counts(ids) == dict.fromkeys(ids, 1)
    assert pair.paris.inbox_counts(back) == dict.fromkeys(back, 1)
    # Every receipt paris persisted is berlin's signature over it, verifiable with any Standard Webhooks library.
    rows = pair.paris.sql(
        "SELECT m.id::text, o.receipt_body, o.receipt_timestamp, o.receipt_signature FROM federation_outbox o "
        "JOIN federation_message m ON m.id = o.message_id WHERE m.id = ANY(%s::uuid[])",
        (ids,),
    )
    for message_id, body, timestamp, signature in rows:
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
        receipt = Webhook(S1).verify(body, headers)["receipt"]
        assert receipt["message_id"] == message_id and receipt["recipient"] == "globex"
    sender = pair.berlin.sql(
        "SELECT DISTINCT sender FROM federation_inboxentry WHERE message_id = ANY(%s::uuid[])", (ids,)
    )
    assert sender == [("acme@paris",)]


def test_chaos_every_message_exactly_once_then_dlq_and_requeue(pair: Pair) -> None:
    pair.proxy.set(mix={"pass": 3, "timeout": 1, "http_503": 1, "http_500": 1, "reset": 1, "reset_after": 2})
    before = pair.paris.last_audit_id(), pair.berlin.last_audit_id()
    ids = pair.send(40)
    wait_delivered(pair, ids, timeout=120)
    pair.proxy.set("pass")
    # Exactly once: every message is in berlin's inbox once, however many attempts it took.
    assert pair.berlin.inbox_counts(ids) == dict.fromkeys(ids, 1)
    counts = pair.proxy.counts
    assert counts["reset_after"] and counts["timeout"] and counts["http_503"] and counts["reset"]
    attempts = pair.paris.sql(
        "SELECT a.outcome, a.http_status, a.error FROM federation_deliveryattempt a "
        "JOIN federation_outbox o ON o.id = a.outbox_id WHERE o.message_id = ANY(%s::uuid[])",
        (ids,),
    )
    assert len(attempts) > len(ids)
    assert {a[1] for a in attempts if a[0] == "retry"} >= {500, 503}
    assert any(a[2].startswith("timeout") for a in attempts)
    assert len(pair.paris.audit("retried", before[0])) == len(attempts) - len(ids)
    # ... and in the sending worker's metrics.
    assert pair.paris.metric("hermes_federation_retries_total") >= len(attempts) - len(ids)
    assert pair.paris.metric("hermes_federation_deliveries_total", {"outcome": "retry"}) >= len(attempts) - len(ids)
    # A receipt lost after berlin stored the message was answered, on retry, with the original receipt.
    assert pair.berlin.audit("duplicate", before[1])

    # A permanent fault (the proxy corrupts signatures): berlin refuses with 401, paris dead-letters at once.
    pair.proxy.set("bad_signature")
    refused = _inbound(pair, "bad_signature")
    dead = pair.send(3)
    wait_for(lambda: delivered(pair.paris, dead, ("dead",)), 60, "dead letters")
    # Each refusal is counted; the audit log keeps at most one a minute per link and reason (_inbound).
    assert _inbound(pair, "bad_signature") >= refused + 3
    assert len(pair.berlin.audit("bad_signature", before[1])) <= 1
    assert pair.paris.metric("hermes_federation_dead_letters", worker=False) == 3  # the DLQ gauge, at scrape time
    listing = pair.paris.manage("federation_dlq", "list")
    assert all(message_id in listing for message_id in dead) and "HTTP 401" in listing
    shown = pair.paris.manage("federation_dlq", "show", dead[0])
    assert "#1" in shown and "401 permanent" in shown
    # The fault is fixed: a requeue from the DLQ delivers, once.
    pair.proxy.set("pass")
    assert "requeue: 3 message(s)" in pair.paris.manage("federation_dlq", "requeue", *dead)
    wait_delivered(pair, dead)
    assert pair.berlin.inbox_counts(dead) == dict.fromkeys(dead, 1)
    assert len(pair.paris.audit("requeued", before[0])) == 3


def test_key_rotation_in_the_middle_of_traffic_loses_nothing(pair: Pair) -> None:
    pair.proxy.set("pass")
    before = pair.paris.last_audit_id()
    traffic = subprocess.Popen(
        [sys.executable, "manage.py", "federation_send", "acme", "globex@berlin", "--count", "60",
         "--interval", "0.05", "--payload", '{"n": {n}}'],
        env=pair.paris.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The runbook (docs/federation.md): both sides add K2, both promote, both retire K1 — while traffic flows.
    pair.berlin.manage("federation_keys", "add", "paris", "--secret", S2)
    pair.paris.manage("federation_keys", "add", "berlin", "--secret", S2)
    pair.paris.manage("federation_keys", "promote", "berlin")
    pair.berlin.manage("federation_keys", "promote", "paris")
    pair.paris.manage("federation_keys", "retire", "berlin")
    pair.berlin.manage("federation_keys", "retire", "paris")
    pair.secret = S2
    out, _ = traffic.communicate(timeout=120)
    ids = out.split()
    assert len(ids) == 60
    wait_delivered(pair, ids)
    assert pair.berlin.inbox_counts(ids) == dict.fromkeys(ids, 1)
    assert not pair.paris.audit("dead_lettered", before)
    events = [row[2] for row in pair.paris.audit("key_promoted", before) + pair.paris.audit("key_retired", before)]
    assert events == ["k2 is now current", "k1 retired"]
    # After the rotation only K2 signs: a fresh request verifies with K2 and not with K1.
    message_id, body = str(uuid.uuid4()), b"{}"
    headers = signing.sign_headers(message_id, body, [signing.decode_secret(S2)])
    assert Webhook(S2).verify(body, headers) == {}


def _envelope() -> tuple[str, bytes]:
    message_id = str(uuid.uuid4())
    body = {
        "id": message_id,
        "type": "message",
        "sender": {"org": "acme", "agent": None},
        "recipient": {"org": "globex", "agent": None},
        "payload": {"probe": True},
        "correlation_id": None,
    }
    return message_id, json.dumps(body).encode()


def _inbound(pair: Pair, decision: str) -> float:
    """berlin's count of inbound requests by decision. Refusals before authentication (bad signature, stale
    timestamp) are counted and logged each time, but written to the audit log at most once a minute per link and
    reason, so which of several is audited depends on what came first in that minute."""
    return pair.berlin.metric("hermes_federation_inbound_total", {"decision": decision}, worker=False)


def test_stale_forged_and_replayed_requests_are_audited(pair: Pair) -> None:
    url = f"{pair.berlin.url}/api/v1/federation/receive/paris"
    secret = signing.decode_secret(pair.secret)
    before = pair.berlin.last_audit_id()
    stale_before, forged_before = _inbound(pair, "stale_timestamp"), _inbound(pair, "bad_signature")
    message_id, body = _envelope()
    headers = {"content-type": "application/json", **signing.sign_headers(message_id, body, [secret])}
    first = httpx.post(url, content=body, headers=headers)
    replay = httpx.post(url, content=body, headers=headers)  # a captured request, replayed inside the window
    assert first.status_code == replay.status_code == 200
    assert replay.json() == {"receipt": first.json()["receipt"], "duplicate": True}
    stale_id, stale_body = _envelope()
    stale = signing.sign_headers(stale_id, stale_body, [secret], timestamp=int(time.time()) - 400)
    response = httpx.post(url, content=stale_body, headers={"content-type": "application/json", **stale})
    assert response.status_code == 401 and response.json()["error"]["code"] == "stale_timestamp"
    forged_id, forged_body = _envelope()
    forged = signing.sign_headers(
        forged_id, forged_body, [signing.decode_secret(S1) if pair.secret == S2 else b"x" * 32]
    )
    response = httpx.post(url, content=forged_body, headers={"content-type": "application/json", **forged})
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_signature"
    assert [r[1] for r in pair.berlin.audit("duplicate", before)] == [message_id]
    assert _inbound(pair, "stale_timestamp") == stale_before + 1
    assert _inbound(pair, "bad_signature") == forged_before + 1
    assert [r[1] for r in pair.berlin.audit("stale_timestamp", before)] in ([], [stale_id])
    assert [r[1] for r in pair.berlin.audit("bad_signature", before)] in ([], [forged_id])
    assert pair.berlin.inbox_counts([message_id, stale_id, forged_id]) == {message_id: 1}


def _request_task(pair: Pair, agent: str, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{pair.paris.url}/api/v1/federation/remote-tasks",
        json={"agent": agent, "message": {"role": "user", "parts": [{"kind": "text", "text": text}]}},
        headers={"Authorization": f"Bearer {pair.api_key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()


def _remote_task(pair: Pair, task_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{pair.paris.url}/api/v1/federation/remote-tasks/{task_id}",
        headers={"Authorization": f"Bearer {pair.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_task_request_for_an_unknown_agent_is_rejected_back_across_instances(pair: Pair) -> None:
    pair.proxy.set("pass")
    created = _request_task(pair, "nobody.globex@berlin", "hello")
    final = wait_for(
        lambda: (t := _remote_task(pair, created["id"]))["state"] == "rejected" and t,
        60,
        "the rejection to travel back",
    )
    assert "globex has no agent 'nobody'" in final["error"]
    assert [(e["seq"], e["state"]) for e in final["events"]] == [(0, "rejected")]
    # The result came back as a correlated reply, accepted by paris although acme has no rule for globex@berlin.
    assert pair.paris.sql(
        "SELECT sender, type FROM federation_inboxentry WHERE correlation_id = %s::uuid", (created["request_id"],)
    ) == [("nobody.globex@berlin", "task_result")]


def test_cross_org_task_round_trip(pair: Pair) -> None:
    """acme on paris asks globex's echo agent on berlin; berlin runs it as a real task; paris mirrors its timeline."""
    pair.proxy.set("pass")
    created = _request_task(pair, "demo-echo.globex@berlin", "hello across instances")
    final = wait_for(
        lambda: (t := _remote_task(pair, created["id"]))["state"] in ("completed", "failed", "rejected") and t,
        90,
        "the remote task to finish",
    )
    assert final["state"] == "completed", final
    seqs = [e["seq"] for e in final["events"]]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) and seqs[0] == 1
    assert final["events"][0]["data"]["to"] == "submitted"
    assert "hello across instances" in json.dumps(final["events"])
    # Berlin ran exactly one task for this request, linked to paris's request id.
    linked = pair.berlin.sql(
        "SELECT task_id, reply_to FROM federation_federatedtask WHERE correlation_id = %s::uuid",
        (created["request_id"],),
    )
    assert len(linked) == 1 and linked[0][1] == "acme@paris" and final["remote_task_id"] == linked[0][0]
    # Acme follows it as one of its own tasks on paris: the tasks API shows berlin's timeline, applied in order.
    headers = {"Authorization": f"Bearer {pair.api_key}"}
    own = wait_for(
        lambda: (
            (t := httpx.get(f"{pair.paris.url}/api/v1/tasks/{created['task_id']}", headers=headers).json())["status"]
            == "completed"
            and t
        ),
        30,
        "acme's own task to complete",
    )
    assert own["agent"]["name"] == "demo-echo.globex@berlin"
    events = httpx.get(f"{pair.paris.url}/api/v1/tasks/{own['id']}/events", headers=headers).json()["results"]
    states = [e["data"]["to"] for e in events if e["kind"] == "state"]
    assert states == ["submitted", "working", "completed"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert any(e["kind"] == "artifact" and "hello across instances" in json.dumps(e["data"]) for e in events)


def test_cancel_of_a_cross_instance_task_reaches_the_executor(pair: Pair) -> None:
    """acme cancels its task on berlin's slow agent from paris: berlin's worker cancels the agent's task, and
    both sides end `canceled`."""
    pair.proxy.set("pass")
    created = _request_task(pair, "demo-slow.globex@berlin", "take 300 seconds")
    headers = {"Authorization": f"Bearer {pair.api_key}"}
    task_url = f"{pair.paris.url}/api/v1/tasks/{created['task_id']}"
    wait_for(lambda: httpx.get(task_url, headers=headers).json()["status"] == "working", 60, "the remote task to run")
    canceled = httpx.post(f"{task_url}/cancel", headers=headers, timeout=10)
    assert canceled.status_code == 202, canceled.text
    assert canceled.json()["status"] == "canceled"  # at once on the requester's side
    (task_id,) = wait_for(
        lambda: pair.berlin.sql(
            "SELECT t.id::text FROM tasks_task t JOIN federation_federatedtask f ON f.task_id = t.id::text "
            "WHERE f.correlation_id = %s::uuid AND t.state = 'canceled'",
            (created["request_id"],),
        ),
        60,
        "berlin's task to be canceled",
    )[0]
    # Canceled by the requester, long before the agent's 300 seconds were up.
    assert pair.berlin.sql(
        "SELECT count(*) FROM core_auditevent WHERE action = 'task.canceled' AND target_id = %s", (task_id,)
    ) == [(1,)]
    # Berlin's canceled state travels back and lands on the mirror; acme's task stays canceled, once.
    final = wait_for(
        lambda: (t := _remote_task(pair, created["id"]))["state"] == "canceled" and t, 60, "the mirror to close"
    )
    assert final["events"][-1]["state"] == "canceled"
    events = httpx.get(f"{task_url}/events", headers=headers).json()["results"]
    assert [e["data"].get("to") for e in events if e["kind"] == "state"].count("canceled") == 1


def test_answering_a_remote_agents_question_across_instances(pair: Pair) -> None:
    """berlin's greeter asks acme a question; acme answers on paris through its own task, and the answer
    reaches berlin's waiting task, which completes with the greeting."""
    pair.proxy.set("pass")
    created = _request_task(pair, "demo-greeter.globex@berlin", "hi")
    headers = {"Authorization": f"Bearer {pair.api_key}"}
    task_url = f"{pair.paris.url}/api/v1/tasks/{created['task_id']}"
    wait_for(lambda: httpx.get(task_url, headers=headers).json()["status"] == "input-required", 60, "the question")
    answer = {"input": {"parts": [{"text": "Ada"}]}}
    replied = httpx.post(f"{task_url}/messages", json=answer, headers=headers, timeout=10)
    assert replied.status_code == 202, replied.text
    wait_for(lambda: httpx.get(task_url, headers=headers).json()["status"] == "completed", 60, "the greeting")
    events = httpx.get(f"{task_url}/events", headers=headers).json()["results"]
    assert any(e["kind"] == "artifact" and "Nice to meet you, Ada." in json.dumps(e["data"]) for e in events)
    states = [e["data"]["to"] for e in events if e["kind"] == "state"]
    assert states == ["submitted", "working", "input-required", "working", "completed"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
