"""Tasks run by a real Celery worker against agents built with the official a2a-sdk, over real HTTP."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.agents.actions import register_agent_by_url, register_agent_manually
from apps.agents.client import AgentUpdate
from apps.orgs import actions as org_actions
from apps.tasks import actions
from apps.tasks.execution import _Recorded, observe
from apps.tasks.models import TERMINAL_STATES, Task, TaskState
from apps.tasks.tasks import WATCH_SECONDS, sweep_tasks
from tests.factories import access_for
from tests.tasks.agents import CHUNKS, SIGN_IN_WAIT, SlowExecutor
from tests.tasks.conftest import nested, reload_task, timeline, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def text(value: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"kind": "text", "text": value}]}


def finished(task: Any) -> Any:
    return wait_for(lambda: (t := reload_task(task)).is_terminal and t)


def test_sdk_streaming_agent_registered_by_card_completes(
    task_worker: Any, agents_base: str, org: Any, alice: Any, client_for: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    assert agent.streaming
    response = client_for(alice).post(
        "/api/v1/tasks",
        json.dumps({"agent": str(agent.pk), "input": {"parts": [{"text": "hi"}, {"data": {"n": 1}}]}}),
        content_type="application/json",
    )
    assert response.status_code == 202
    task = finished(response.json())
    assert task.state == "completed" and task.attempts == 1 and task.remote_task_id
    events = timeline(task)
    assert [kind for kind, _ in events] == ["state", "message", "state", "progress", "artifact", "state"]
    assert events[0][1] == "submitted" and events[2][1] == "working" and events[-1][1] == "completed"
    assert events[3][1]["parts"] == [{"kind": "text", "text": "thinking"}]
    artifact = events[4][1]
    assert artifact["name"] == "result"
    assert artifact["parts"][0] == {"kind": "text", "text": "echo: hi"}
    assert artifact["parts"][1]["data"] == {"received": {"n": 1}}
    agent.refresh_from_db()
    assert agent.is_online


def test_data_as_deep_as_hermes_accepts_reaches_an_sdk_agent_and_back(
    task_worker: Any, agents_base: str, org: Any
) -> None:
    # The limit is only honest if the deepest accepted input survives A2A's protobuf both ways, with room for the
    # agent to wrap it (this one answers {"received": <the data>}, one level deeper).
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    message = {"role": "user", "parts": [{"text": "deep"}, {"data": nested(actions.MAX_JSON_DEPTH)}]}
    task = finished(actions.create_task(org=org, agent=agent, message=message))
    assert task.state == "completed", task.last_error
    artifact = next(data for kind, data in timeline(task) if kind == "artifact")
    assert artifact["parts"][1]["data"] == {"received": nested(actions.MAX_JSON_DEPTH)}


def test_non_streaming_agent_is_polled_to_completion(task_worker: Any, agents_base: str, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/plain/")
    assert not agent.streaming
    task = finished(actions.create_task(org=org, agent=agent, message=text("plain")))
    assert task.state == "completed"
    artifacts = [data for kind, data in timeline(task) if kind == "artifact"]
    assert artifacts[0]["parts"] == [{"kind": "text", "text": "echo: plain"}]


def report_chunks(task: Any) -> list[dict[str, Any]]:
    """The artifact events of a task of the `chunks` agents, checked to hold its CHUNKS pieces once each, in order,
    the same way polled or streamed: the first chunk creates the artifact, later ones append to it."""
    chunks = [data for kind, data in timeline(task) if kind == "artifact"]
    assert [c["append"] for c in chunks] == [False] + [True] * (len(chunks) - 1)
    parts = [part for c in chunks for part in c["parts"]]
    assert parts == [{"kind": "text", "text": f"chunk {n}"} for n in range(1, CHUNKS + 1)]
    return chunks


@pytest.mark.parametrize("path", ["chunks", "chunks-stream"])
def test_artifact_chunks_are_all_recorded_polled_or_streamed(
    task_worker: Any, agents_base: str, org: Any, path: str
) -> None:
    # The agent appends CHUNKS pieces to one artifact while the task works. Polled, only the first piece used to
    # be recorded (later snapshots of the same artifact id were skipped as already seen) and the task completed.
    agent = register_agent_by_url(org=org, url=f"{agents_base}/{path}/")
    assert agent.streaming == (path == "chunks-stream")
    task = finished(actions.create_task(org=org, agent=agent, message=text("write")))
    assert task.state == "completed"
    chunks = report_chunks(task)
    assert all(set(c) == {"artifact_id", "name", "parts", "append", "last_chunk"} for c in chunks)
    assert {c["artifact_id"] for c in chunks} == {"report"}
    assert len(chunks) > 1  # the growth is reported as it happens, not once at the end


@pytest.mark.parametrize("path", ["chunks", "chunks-stream"])
def test_a_task_picked_up_after_its_worker_was_lost_records_each_chunk_once(
    task_worker: Any, agents_base: str, org: Any, path: str
) -> None:
    # The next worker watches the agent's task (GetTask or SubscribeToTask), whose first snapshot holds the whole
    # artifact: it used to be recorded again, whole, after the chunks the lost worker had recorded.
    agent = register_agent_by_url(org=org, url=f"{agents_base}/{path}/")
    task = actions.create_task(org=org, agent=agent, message=text("write"))
    wait_for(lambda: any(kind == "artifact" for kind, _ in timeline(task)))
    # Its worker is presumed dead (another holder, no heartbeat for an hour): it stops at its next look at the
    # row, and the sweeper hands the task to a new run.
    long_ago = timezone.now() - timedelta(hours=1)
    Task.objects.for_org(org).filter(pk=task.pk).update(claimed_by="lost-worker", heartbeat_at=long_ago)
    time.sleep(2 * WATCH_SECONDS)
    assert sweep_tasks()["redispatched"] == 1
    task = finished(task)
    assert task.state == "completed" and task.attempts == 2
    report_chunks(task)


@pytest.mark.parametrize("path", ["oob", "oob-stream"])
def test_an_agent_that_goes_on_after_out_of_band_sign_in_completes_the_task(
    task_worker: Any, agents_base: str, org: Any, path: str
) -> None:
    # Nobody followed an auth-required task: the agent's result was lost and the task failed at its deadline.
    agent = register_agent_by_url(org=org, url=f"{agents_base}/{path}/")
    task = actions.create_task(org=org, agent=agent, message=text("work"))
    waiting = wait_for(lambda: (t := reload_task(task)).state == "auth-required" and not t.claimed_by and t)
    assert sweep_tasks()["auth_rechecked"] == 1  # the agent still waits: nothing changes
    time.sleep(SIGN_IN_WAIT + 0.5)
    assert reload_task(waiting).state == "auth-required"
    assert sweep_tasks()["auth_rechecked"] == 1
    task = finished(task)
    assert task.state == "completed", task.last_error
    artifacts = [data for kind, data in timeline(task) if kind == "artifact"]
    assert [a["parts"] for a in artifacts] == [[{"kind": "text", "text": "result after sign-in"}]]
    states = [data for kind, data in timeline(task) if kind == "state"]
    assert states[-3:] == ["auth-required", "working", "completed"]


def test_a_cancel_before_the_agents_first_answer_ends_the_task_soon(
    task_worker: Any, agents_base: str, org: Any, monkeypatch: Any
) -> None:
    # The call used to end only once the agent named its task: against an agent that says nothing, the 202'd
    # cancel did nothing until the deadline failed the task (an hour by default), holding a worker slot meanwhile.
    from apps.tasks import execution

    monkeypatch.setattr(execution, "CANCEL_GRACE_SECONDS", 0.5)
    agent = register_agent_by_url(org=org, url=f"{agents_base}/silent/")
    task = actions.create_task(org=org, agent=agent, message=text("hello?"))
    wait_for(lambda: reload_task(task).claimed_by)
    actions.cancel_task(reload_task(task))
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=5)
    assert task.state == "canceled" and task.remote_task_id == ""


def test_a_task_whose_cancel_was_accepted_ends_canceled_even_past_its_deadline(org: Any, task_worker: Any) -> None:
    from apps.tasks.tasks import fail_overdue

    agent = register_agent_manually(org=org, name="Nowhere", url="https://nowhere.example.com/")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("apps.tasks.tasks.run_task.apply_async", lambda *a, **k: None)
        task = actions.create_task(org=org, agent=agent, message=text("hi"))
    Task.objects.for_org(org).filter(pk=task.pk).update(cancel_requested_at=timezone.now(), claimed_by="w")
    fail_overdue(reload_task(task))
    assert reload_task(task).state == "canceled"


def test_a_cancel_the_agent_refuses_is_said_on_the_task(task_worker: Any, agents_base: str, org: Any) -> None:
    # The timeline said canceled and only the worker's log knew that the agent's task went on.
    agent = register_agent_by_url(org=org, url=f"{agents_base}/oob/")  # its CancelTask is not implemented
    task = actions.create_task(org=org, agent=agent, message=text("work"))
    waiting = wait_for(lambda: (t := reload_task(task)).state == "auth-required" and not t.claimed_by and t)
    actions.cancel_task(waiting)
    task = wait_for(lambda: (t := reload_task(task)).last_error and t)
    assert task.state == "canceled"
    assert task.last_error.startswith("Canceled here, but the agent's CancelTask failed: ")


def test_a_plain_message_answer_is_the_completed_states_message(task_worker: Any, agents_base: str, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/plain/")
    task = finished(actions.create_task(org=org, agent=agent, message=text("message")))
    assert task.state == "completed"
    # Documented shape of a state event: the agent's words under `message`, as for a status message (its role and
    # parts used to be spread into the state's own data).
    assert timeline(task)[2:] == [("state", "working"), ("state", "completed")]
    last = task.events.order_by("-seq").first()
    assert last.data == {
        "from": "working",
        "to": "completed",
        "message": {"role": "agent", "parts": [{"kind": "text", "text": "just a message"}]},
    }


def test_agent_failure_is_recorded_not_retried(task_worker: Any, agents_base: str, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    task = finished(actions.create_task(org=org, agent=agent, message=text("fail")))
    assert task.state == "failed" and task.attempts == 1
    assert not [k for k, _ in timeline(task) if k == "retry"]


def test_input_required_then_follow_up(task_worker: Any, agents_base: str, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/stream/")
    task = actions.create_task(org=org, agent=agent, message=text("ask"))
    waiting = wait_for(lambda: (t := reload_task(task)).state == "input-required" and t)
    assert waiting.claimed_by == ""
    actions.continue_task(waiting, message=text("Paris"))
    task = finished(task)
    assert task.state == "completed" and task.pending_message is None
    artifacts = [data for kind, data in timeline(task) if kind == "artifact"]
    assert artifacts[-1]["parts"][0]["text"] == "got: Paris"


def test_unreachable_agent_is_retried_with_backoff_then_fails(
    task_worker: Any, org: Any, settings: Any, free_port: int
) -> None:
    settings.HERMES_TASK_MAX_ATTEMPTS = 3
    agent = register_agent_manually(org=org, name="Gone", url=f"http://127.0.0.1:{free_port}/", streaming=True)
    task = finished(actions.create_task(org=org, agent=agent, message=text("hi")))
    assert task.state == "failed" and task.attempts == 3
    events = timeline(task)
    retries = [data for kind, data in events if kind == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["reason"] == "transport_error" and 0 < r["delay"] <= 0.2 for r in retries)
    assert "after 3 attempts" in task.last_error
    assert events[-1][0] == "state" and events[-1][1] == "failed"


def test_cancel_the_slow_agent_mid_stream(task_worker: Any, agents_base: str, org: Any) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/slow/")
    task = actions.create_task(org=org, agent=agent, message=text("100"))
    wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 3)
    actions.cancel_task(reload_task(task))
    task = finished(task)
    assert task.state == "canceled"
    progress = [data for kind, data in timeline(task) if kind == "progress"]
    assert len(progress) < 50  # stopped long before the 100 steps (10 s) the agent would have taken
    assert timeline(task)[-1] == ("state", "canceled")


def running(agent: Any, steps: str) -> Any:
    """A task the agent works on: claimed, working, with the agent's task id known."""
    task = actions.create_task(org=agent.organization, agent=agent, message=text(steps))
    return wait_for(lambda: (t := reload_task(task)).state == "working" and t.remote_task_id and t)


def after_the_end(task: Any) -> list[tuple[str, Any]]:
    """The timeline after the task's terminal state event (what must stay empty)."""
    events = timeline(task)
    end = next(i for i, (kind, data) in enumerate(events) if kind == "state" and data in TERMINAL_STATES)
    return events[end + 1 :]


@pytest.mark.parametrize("path", ["slow", "sleepy"])
def test_a_cancel_is_noticed_promptly_and_nothing_the_agent_says_after_it_is_recorded(
    task_worker: Any, agents_base: str, org: Any, settings: Any, path: str
) -> None:
    # The worker used to notice a cancel at its next heartbeat (5 s by default): the agent streamed on meanwhile,
    # and a short task could complete after the 202. Now it reads its row every WATCH_SECONDS.
    settings.HERMES_TASK_HEARTBEAT_SECONDS = 30.0  # far beyond the bound: the heartbeat is not what notices
    agent = register_agent_by_url(org=org, url=f"{agents_base}/{path}/")
    task = running(agent, "100")
    if path == "slow":
        wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 2)
    started = time.monotonic()
    seq = actions.cancel_task(task).last_seq
    task = wait_for(lambda: (t := reload_task(task)).is_terminal and t, timeout=WATCH_SECONDS + 2)
    # The bound: WATCH_SECONDS to notice, then ending the call (a sleepy agent sends nothing that could end it).
    assert time.monotonic() - started < WATCH_SECONDS + 1.5
    assert task.state == "canceled" and timeline(task)[seq:] == [("state", "canceled")]
    wait_for(lambda: task.remote_task_id in SlowExecutor.canceled, timeout=5)  # CancelTask reached the agent
    assert wait_for(lambda: reload_task(task).claimed_by == "", timeout=5)  # and the job ended


@pytest.mark.parametrize("path", ["slow", "sleepy"])
def test_a_task_failed_by_its_deadline_records_nothing_more_and_its_worker_stops_the_agent(
    task_worker: Any, agents_base: str, org: Any, settings: Any, path: str
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.HERMES_TASK_HEARTBEAT_SECONDS = 30.0
    agent = register_agent_by_url(org=org, url=f"{agents_base}/{path}/")
    task = running(agent, "100")
    if path == "slow":
        wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 2)
    Task.objects.for_org(org).filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    # No sweeper runs here: the worker's own watch of its row fails the task at its deadline (the sweeper shares
    # the workers' slots, which agents that hang — the sleepy one sends nothing — can hold every one of), then
    # ends its call and asks the agent to stop.
    wait_for(lambda: task.remote_task_id in SlowExecutor.canceled, timeout=WATCH_SECONDS + 2)
    time.sleep(0.5)  # the slow agent's updates already on their way arrive, and are dropped
    task = reload_task(task)
    assert task.state == "failed" and task.last_error == "deadline exceeded"
    assert after_the_end(task) == []  # used to go on: `progress "step 4/30"` after `working→failed (deadline)`


def test_deleting_the_org_stops_its_running_task_at_the_agent(
    task_worker: Any, agents_base: str, org: Any, alice: Any, caplog: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/slow/")
    task = actions.create_task(org=org, agent=agent, message=text("100"))
    wait_for(lambda: sum(1 for k, _ in timeline(task) if k == "progress") >= 2)
    remote_id = reload_task(task).remote_task_id
    org_actions.delete_organization(access=access_for(alice, org))
    wait_for(lambda: remote_id in SlowExecutor.canceled)  # the worker noticed and asked the agent to stop
    assert not Task.objects.unscoped("test").filter(pk=task.pk).exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a deleted task is not an error"


def test_sweeper_fails_tasks_past_their_deadline(org: Any, transactional_db: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from apps.tasks.models import Task
    from apps.tasks.tasks import sweep_tasks
    from tests.tasks.conftest import make_agent

    task = actions.create_task(org=org, agent=make_agent(org), message=text("x"))
    Task.objects.for_org(org).filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert sweep_tasks()["deadline"] == 1
    task = reload_task(task)
    assert task.state == TaskState.FAILED and task.last_error == "deadline exceeded"


def test_the_sweeper_tells_the_agent_when_a_task_nobody_runs_misses_its_deadline(
    org: Any, transactional_db: Any, monkeypatch: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from apps.tasks.actions import Observation
    from apps.tasks.tasks import sweep_tasks
    from tests.tasks.conftest import make_agent

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr("apps.tasks.tasks.cancel_remote_task.delay", lambda *args: sent.append(args))
    agent = make_agent(org)
    waiting = actions.create_task(org=org, agent=agent, message=text("x"))
    actions.record(waiting, [Observation(kind="state", data={}, state="input-required", remote_task_id="r-wait")])
    running = actions.create_task(org=org, agent=agent, message=text("y"))
    actions.record(running, [Observation(kind="state", data={}, state="working", remote_task_id="r-run")])
    Task.objects.for_org(org).filter(pk=running.pk).update(claimed_by="w1", heartbeat_at=timezone.now())
    Task.objects.for_org(org).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert sweep_tasks()["deadline"] == 2
    # The agent waits for input that will never come: it is told. The running one's worker tells it itself.
    assert sent == [(str(waiting.pk), "r-wait")]


def _sse_frames(response: Any, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Parse SSE frames from a streaming response; stop after `stop_after` events (closing the stream)."""
    frames: list[dict[str, Any]] = []
    buffer = b""
    for chunk in response.streaming_content:
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line)
            if "data" in fields:
                data = json.loads(fields["data"])
                frames.append({"id": fields.get("id"), "event": fields.get("event"), "data": data})
            if stop_after is not None and len(frames) >= stop_after:
                response.close()
                return frames
    return frames


def test_sse_stream_with_resume_in_the_middle(
    task_worker: Any, agents_base: str, org: Any, alice: Any, client_for: Any
) -> None:
    agent = register_agent_by_url(org=org, url=f"{agents_base}/slow/")
    task = actions.create_task(org=org, agent=agent, message=text("5"))
    client = client_for(alice)
    first = _sse_frames(client.get(f"/api/v1/tasks/{task.pk}/stream", HTTP_ACCEPT="text/event-stream"), stop_after=4)
    assert [f["id"] for f in first] == ["1", "2", "3", "4"]
    resumed = client.get(f"/api/v1/tasks/{task.pk}/stream", HTTP_LAST_EVENT_ID=first[-1]["id"])
    assert resumed["Content-Type"] == "text/event-stream"
    rest = _sse_frames(resumed)
    assert rest[-1] == {"id": None, "event": "end", "data": {"state": "completed"}}
    seqs = [int(f["id"]) for f in first + rest[:-1]]
    assert seqs == list(range(1, reload_task(task).last_seq + 1))  # every event once, in order
    kinds = [f["event"] for f in first + rest[:-1]]
    assert kinds.count("progress") == 5 and kinds[-2:] == ["artifact", "state"]


def test_sse_lifetime_is_bounded(org: Any, alice: Any, client_for: Any, settings: Any) -> None:
    from tests.tasks.conftest import make_agent

    settings.HERMES_SSE_MAX_SECONDS = 0.3
    settings.HERMES_SSE_POLL_SECONDS = 0.05
    task = actions.create_task(org=org, agent=make_agent(org), message=text("x"))
    frames = _sse_frames(client_for(alice).get(f"/api/v1/tasks/{task.pk}/stream?after=1"))
    assert [f["id"] for f in frames] == ["2"]  # then the stream ends; the client resumes with Last-Event-ID: 2


def test_sse_after_past_the_tasks_last_event_still_gets_the_events_to_come(
    client_for: Any, alice: Any, org: Any, settings: Any
) -> None:
    # `after=7` on a task at seq 2: the stream used to send only seq 8 onwards, so events 3 to 7 never came.
    from apps.tasks.actions import Observation
    from tests.tasks.conftest import make_agent

    settings.HERMES_SSE_POLL_SECONDS = 0.02
    task = actions.create_task(org=org, agent=make_agent(org), message=text("x"))
    response = client_for(alice).get(f"/api/v1/tasks/{task.pk}/stream?after=7")
    actions.record(task, [Observation(kind="state", data={}, state="working")])
    actions.record(task, [Observation(kind="state", data={}, state="completed")])
    frames = _sse_frames(response)
    assert [f["id"] for f in frames] == ["3", "4", None]
    assert frames[-1] == {"id": None, "event": "end", "data": {"state": "completed"}}


def test_a_resumed_watch_drops_only_what_the_timeline_holds(task: Any) -> None:
    # What the lost worker recorded: the working state with a progress line, an artifact in two chunks, one
    # without an id.
    def artifact(key: str, *texts: str, append: bool = False) -> actions.Observation:
        parts = [{"kind": "text", "text": t} for t in texts]
        data = {"artifact_id": key, "name": key, "parts": parts, "append": append, "last_chunk": False}
        return actions.Observation(kind="artifact", data=data, remote_task_id="r1")

    line = {"role": "agent", "parts": [{"kind": "text", "text": "step 2"}]}
    actions.record(
        task,
        [
            actions.Observation(kind="progress", data=line, state="working", remote_task_id="r1"),
            artifact("report", "a"),
            artifact("report", "b", append=True),
            artifact("", "loose"),
        ],
    )

    def snapshot_artifact(key: str, *texts: str) -> AgentUpdate:
        whole: dict[str, Any] = {"artifactId": key, "name": key} if key else {}
        whole["parts"] = [{"text": t} for t in texts]
        return AgentUpdate(kind="artifact", state=None, artifact=whole, parts=whole["parts"], remote_task_id="r1")

    def status(state: str, text: str) -> AgentUpdate:
        return AgentUpdate(kind="status", state=state, parts=[{"text": text}], remote_task_id="r1")

    snapshot = [
        snapshot_artifact("report", "a", "b", "c"),  # grew by "c" since
        snapshot_artifact("", "loose"),  # held already
        snapshot_artifact("other", "new"),  # new
        status("working", "step 2"),  # the same progress line
        status("working", "step 3"),  # a new one
    ]
    kept = list(_Recorded.of(reload_task(task)).without(iter(snapshot)))
    assert [(u.kind, u.parts) for u in kept] == [
        ("artifact", [{"text": "c"}]),
        ("artifact", [{"text": "new"}]),
        ("status", [{"text": "step 3"}]),
    ]
    assert kept[0].artifact == {
        "artifactId": "report",
        "name": "report",
        "parts": [{"text": "c"}],
        "append": True,
        "lastChunk": False,
    }
    assert observe(kept[0]).data["append"] is True
