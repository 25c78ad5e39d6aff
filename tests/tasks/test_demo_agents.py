"""The built-in demo agents, served by Hermes itself under /demo-agents/ (uvicorn on loopback), run by a worker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from apps.agents.actions import register_agent_by_url
from apps.tasks import actions
from tests.tasks.conftest import CSRF, reload_task, session_cookie, timeline, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def public_url(hermes: str, settings: Any) -> None:
    settings.HERMES_PUBLIC_URL = hermes  # the demo cards name their endpoint under this instance's URL


def test_echo_demo_agent_registered_by_url_streams_to_a_websocket(
    hermes: str,
    task_worker: Any,
    org: Any,
    alice: Any,
) -> None:
    agent = register_agent_by_url(org=org, url=f"{hermes}/demo-agents/echo/")
    cookie = session_cookie(alice)
    with httpx.Client(base_url=hermes, headers={"Cookie": cookie, "X-CSRFToken": CSRF}, timeout=10) as http:
        body = {"agent": str(agent.pk), "input": {"parts": [{"text": "hello demo"}]}}
        task_id = http.post("/api/v1/tasks", json=body).json()["id"]
    ws_url = hermes.replace("http://", "ws://") + f"/ws/tasks/{task_id}/"
    events: list[dict[str, Any]] = []
    with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": hermes}, open_timeout=5) as ws:
        while not events or events[-1]["data"].get("to") not in ("completed", "failed"):
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "event":
                events.append(frame["event"])
    states = [e["data"]["to"] for e in events if e["kind"] == "state"]
    assert states[0] == "submitted" and states[1] == "working" and states[-1] == "completed"
    artifact = next(e["data"] for e in events if e["kind"] == "artifact")
    assert "hello demo" in json.dumps(artifact["parts"])


def test_flaky_demo_agent_transport_errors_are_retried(
    hermes: str, task_worker: Any, org: Any, alice: Any, client_for: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{hermes}/demo-agents/flaky/")
    message = {"parts": [{"text": "try me"}], "metadata": {"flakyFailures": 2}}
    task = actions.create_task(org=org, agent=agent, message=message)
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=30)
    assert task.state == "completed" and task.attempts == 3
    retries = [data for kind, data in timeline(task) if kind == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2] and all("503" in r["error"] for r in retries)
    # The errors it recovered from are history (the retry events), not the completed task's error.
    assert client_for(alice).get(f"/api/v1/tasks/{task.pk}").json()["last_error"] == ""


def test_cancel_the_slow_demo_agent_mid_stream(hermes: str, task_worker: Any, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{hermes}/demo-agents/slow/")
    message = {"parts": [{"text": "slow"}, {"data": {"seconds": 20, "interval": 0.1}}]}
    task = actions.create_task(org=org, agent=agent, message=message)
    wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 3, timeout=20)
    actions.cancel_task(reload_task(task))
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=20)
    assert task.state == "canceled"
    assert sum(1 for k, _ in timeline(task) if k == "progress") < 150  # 200 steps had it run to the end
