"""End to end over real sockets: Hermes' ASGI app under uvicorn, a websocket client and an SSE client, a Celery
worker, and an agent built with the official a2a-sdk — all on loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from apps.agents.actions import register_agent_by_url
from tests.tasks.conftest import CSRF, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_websocket_and_sse_follow_a_streaming_task_to_completion(
    hermes: str, task_worker: Any, agents_base: str, org: Any, alice: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/slow/")
    cookie = session_cookie(alice)
    headers = {"Cookie": cookie, "Origin": hermes}
    with httpx.Client(base_url=hermes, headers={"Cookie": cookie, "X-CSRFToken": CSRF}, timeout=10) as http:
        response = http.post("/api/v1/tasks", json={"agent": str(agent.pk), "input": {"parts": [{"text": "3"}]}})
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]

        ws_url = hermes.replace("http://", "ws://") + f"/ws/tasks/{task_id}/"
        events: list[dict[str, Any]] = []
        with connect(ws_url, additional_headers=headers, open_timeout=5) as ws:
            while not events or events[-1]["data"].get("to") != "completed":
                frame = json.loads(ws.recv(timeout=10))
                if frame["type"] == "event":
                    events.append(frame["event"])
        states = [e["data"]["to"] for e in events if e["kind"] == "state"]
        assert states == ["submitted", "working", "completed"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        artifact = next(e for e in events if e["kind"] == "artifact")
        assert artifact["data"]["parts"] == [{"kind": "text", "text": "done after 3 steps"}]

        # The same timeline through SSE (served by the ASGI app: the async generator path), resumed mid-way.
        seen: list[int] = []
        with http.stream("GET", f"/api/v1/tasks/{task_id}/stream", headers={"Last-Event-ID": "2"}) as sse:
            assert sse.headers["content-type"] == "text/event-stream"
            for line in sse.iter_lines():
                if line.startswith("id: "):
                    seen.append(int(line[4:]))
                if line.startswith("event: end"):
                    break
        assert seen == list(range(3, len(events) + 1))


def test_other_org_websocket_is_closed_with_4404(hermes: str, org: Any, alice: Any, charlie: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    from apps.tasks import actions
    from tests.tasks.conftest import make_agent

    task = actions.create_task(org=org, agent=make_agent(org), message={"parts": [{"text": "x"}]})
    url = hermes.replace("http://", "ws://") + f"/ws/tasks/{task.pk}/"
    headers = {"Cookie": session_cookie(charlie), "Origin": hermes}
    with connect(url, additional_headers=headers) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_revoking_a_key_closes_its_websocket_through_uvicorn(hermes: str, org: Any, alice: Any, settings: Any) -> None:
    """The close code and its reason reach a real client: revocation is announced over Redis to the server's
    socket (the re-check is set far beyond the wait, so only the announcement can close it)."""
    from websockets.exceptions import ConnectionClosed

    from apps.orgs.actions import revoke_api_key
    from apps.tasks import actions
    from tests.factories import access_for, issue_api_key
    from tests.tasks.conftest import make_agent

    settings.HERMES_WS_RESYNC_SECONDS = 60
    task = actions.create_task(org=org, agent=make_agent(org), message={"parts": [{"text": "x"}]})
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])
    url = hermes.replace("http://", "ws://") + f"/ws/tasks/{task.pk}/?api_key={plaintext}"
    with connect(url) as ws:
        while json.loads(ws.recv(timeout=5))["type"] != "synced":
            pass
        revoke_api_key(access=access_for(alice, org), key=key)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=3)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "key_revoked")
