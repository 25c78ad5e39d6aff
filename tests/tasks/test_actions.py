from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest
from django.db import connection

from apps.tasks import actions
from apps.tasks.actions import Observation
from apps.tasks.models import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    IllegalTransition,
    Task,
    TaskEvent,
    TaskState,
    check_transition,
)
from tests.tasks.conftest import make_agent, nested

MESSAGE = {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}


def test_terminal_states_are_final_and_illegal_moves_refused() -> None:
    for state in TERMINAL_STATES:
        for target in TaskState:
            with pytest.raises(IllegalTransition):
                check_transition(state, target)
    with pytest.raises(IllegalTransition, match="working to submitted"):
        check_transition(TaskState.WORKING, TaskState.SUBMITTED)
    check_transition(TaskState.INPUT_REQUIRED, TaskState.WORKING)
    assert set(ALLOWED_TRANSITIONS) == set(TaskState)


@pytest.mark.django_db
def test_create_records_submitted_and_the_message(org: Any, agent: Any, alice: Any) -> None:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE, created_by=alice, metadata={"k": 1})
    events = list(task.events.order_by("seq").values_list("seq", "kind", "data"))
    assert events == [
        (1, "state", {"from": None, "to": "submitted"}),
        (2, "message", MESSAGE),
    ]
    assert task.last_seq == 2 and task.state == "submitted" and task.created_by == alice
    assert task.deadline_at is not None and task.next_attempt_at is not None


@pytest.mark.django_db
def test_create_refuses_foreign_private_agent_and_oversize(org: Any, private_foreign_agent: Any, settings: Any) -> None:
    with pytest.raises(actions.AgentNotUsable):
        actions.create_task(org=org, agent=private_foreign_agent, message=MESSAGE)
    settings.HERMES_MAX_TASK_INPUT_BYTES = 50
    agent = make_agent(org)
    with pytest.raises(actions.TaskInputTooLarge):
        actions.create_task(
            org=org, agent=agent, message={"role": "user", "parts": [{"kind": "text", "text": "x" * 60}]}
        )
    assert Task.objects.unscoped("test").count() == 0


@pytest.mark.django_db
def test_record_applies_agent_states_and_ignores_illegal_ones(org: Any, agent: Any) -> None:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    task = actions.record(
        task,
        [
            Observation(kind="state", data={}, state="working", remote_task_id="r1", remote_context_id="c1"),
            Observation(kind="progress", data={"role": "agent", "parts": [{"kind": "text", "text": "50%"}]}),
            Observation(kind="artifact", data={"artifact_id": "a", "parts": [{"kind": "text", "text": "out"}]}),
            Observation(kind="state", data={}, state="completed"),
            Observation(kind="state", data={}, state="working"),  # after completed: kept out of the state
        ],
    )
    assert task.state == "completed" and task.remote_task_id == "r1" and task.remote_context_id == "c1"
    kinds = list(task.events.order_by("seq").values_list("seq", "kind"))
    assert kinds == [(1, "state"), (2, "message"), (3, "state"), (4, "progress"), (5, "artifact"), (6, "state")]
    assert task.finished_at is not None and task.started_at is not None
    assert actions.finish(task, TaskState.FAILED, error="late").state == "completed"  # terminal is final


@pytest.mark.django_db
def test_a_state_event_holds_only_the_states_data(org: Any, agent: Any) -> None:
    # A progress line that also moves the task to working used to spread its role and parts into the state event.
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    said = {"role": "agent", "parts": [{"kind": "text", "text": "on it"}]}
    task = actions.record(task, [Observation(kind="progress", data=said, state="working")])
    events = list(task.events.order_by("seq").values_list("kind", "data"))[2:]
    assert events == [("progress", said), ("state", {"from": "submitted", "to": "working"})]


def _retried(org: Any, agent: Any) -> Task:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    task = actions.record(task, [Observation(kind="state", data={}, state="working")])
    error = "AgentTransportError: The agent answered HTTP 503."
    task = actions.note_retry(task, reason="transport_error", error=error, attempt=1, delay=0)
    assert task.last_error == error  # while it is retried, the error says why
    return task


SAID = {"role": "agent", "parts": [{"kind": "text", "text": "cannot do that"}]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "data", "last_error"),
    [
        ("completed", {}, ""),
        ("input-required", {"message": SAID}, ""),
        ("canceled", {}, ""),
        ("failed", {"message": SAID}, "cannot do that"),  # the agent's words are why it failed
        ("failed", {"error": "agent unreachable after 5 attempts"}, "agent unreachable after 5 attempts"),
        ("rejected", {"reason": "not for me"}, "not for me"),
    ],
)
def test_last_error_is_the_problem_of_the_state_the_task_moved_to(
    org: Any, agent: Any, state: str, data: dict[str, Any], last_error: str
) -> None:
    task = _retried(org, agent)
    if state == "canceled":
        Task.objects.for_org(org).filter(pk=task.pk).update(claimed_by="")
        task = actions.cancel_task(task)
    elif "error" in data:
        task = actions.finish(task, state, **data)
    else:
        task = actions.record(task, [Observation(kind="state", data=data, state=state)])
    assert task.state == state
    assert Task.objects.for_org(org).get(pk=task.pk).last_error == last_error
    assert task.events.filter(kind="retry").count() == 1  # the history stays on the timeline


@pytest.mark.django_db
def test_task_metadata_nests_no_deeper_than_a_message(org: Any, agent: Any) -> None:
    with pytest.raises(actions.InvalidMessage, match="the task's metadata nests 30 levels deep") as refused:
        actions.create_task(org=org, agent=agent, message=MESSAGE, metadata=nested(30))
    assert refused.value.field == "metadata"
    assert Task.objects.unscoped("test").count() == 0
    with pytest.raises(actions.InvalidMessage, match="the task's metadata holds the integer 18446744073709551616"):
        actions.create_task(org=org, agent=agent, message=MESSAGE, metadata={"id": 2**64})
    deepest = nested(actions.MAX_JSON_DEPTH)
    assert actions.create_task(org=org, agent=agent, message=MESSAGE, metadata=deepest).metadata == deepest


@pytest.mark.django_db
def test_cancel_unclaimed_and_finished(org: Any, agent: Any) -> None:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    task = actions.cancel_task(task)
    assert task.state == "canceled" and task.cancel_requested_at is not None
    with pytest.raises(actions.TaskNotCancelable):
        actions.cancel_task(task)


@pytest.mark.django_db
def test_cancel_of_a_running_task_is_a_request_for_its_worker(org: Any, agent: Any) -> None:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    Task.objects.for_org(org).filter(pk=task.pk).update(claimed_by="w1", state="working")
    task = actions.cancel_task(task)
    assert task.state == "working" and task.cancel_requested_at is not None


PROGRESS = {"role": "agent", "parts": [{"kind": "text", "text": "step 4/30"}]}


@pytest.mark.django_db
def test_nothing_is_recorded_after_a_terminal_state(org: Any, agent: Any, caplog: Any) -> None:
    # A task its deadline failed kept receiving its still-running worker's progress after `working→failed`.
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    actions.record(task, [Observation(kind="state", data={}, state="working", remote_task_id="r1")])
    failed = actions.finish(task, TaskState.FAILED, error="deadline exceeded", reason="deadline")
    caplog.set_level(logging.INFO, logger="apps.tasks.actions")
    late = [
        Observation(kind="progress", data=PROGRESS, state="working"),
        Observation(kind="artifact", data={"artifact_id": "a", "parts": [{"kind": "text", "text": "out"}]}),
        Observation(kind="state", data={"message": PROGRESS}, state="failed"),  # same state, with words
        Observation(kind="state", data={}, state="completed"),
    ]
    task = actions.record(task, late, worker="w1")
    assert task.state == "failed" and task.last_seq == failed.last_seq == 4
    assert Task.objects.for_org(org).get(pk=task.pk).updated_at == failed.updated_at  # not even touched
    assert [r.getMessage() for r in caplog.records] == [
        f"task {task.pk} is failed; dropped what arrived after that: progress, artifact, failed, completed"
    ]
    # Within one batch too: what follows the agent's own terminal state is not appended after it.
    other = actions.create_task(org=org, agent=agent, message=MESSAGE)
    other = actions.record(other, [Observation(kind="state", data={}, state="completed"), late[1]])
    assert list(other.events.order_by("seq").values_list("kind", flat=True)) == ["state", "message", "state"]


@pytest.mark.django_db
def test_after_a_cancel_request_the_agents_updates_cancel_the_task(org: Any, agent: Any) -> None:
    # A 202 cancel is final for the caller: a short task could complete after it, before its worker noticed.
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    Task.objects.for_org(org).filter(pk=task.pk).update(claimed_by="w1")
    task = actions.record(task, [Observation(kind="state", data={}, state="working")], worker="w1")
    assert actions.cancel_task(task).state == "working"  # a request for its worker
    task = actions.record(
        task,
        [
            Observation(kind="progress", data=PROGRESS, remote_task_id="r1"),
            Observation(kind="state", data={}, state="completed"),
        ],
        worker="w1",
    )
    assert task.state == "canceled" and task.claimed_by == ""
    # The agent's first answer came after the cancel: its task id is kept all the same, for CancelTask.
    assert Task.objects.for_org(org).get(pk=task.pk).remote_task_id == "r1"
    events = list(task.events.order_by("seq").values_list("kind", "data"))[2:]
    assert events == [
        ("state", {"from": "submitted", "to": "working"}),
        ("state", {"from": "working", "to": "canceled", "reason": "canceled by the caller"}),
    ]


@pytest.mark.django_db
def test_continue_only_when_waiting(org: Any, agent: Any) -> None:
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    with pytest.raises(actions.TaskNotWaitingForInput):
        actions.continue_task(task, message=MESSAGE)
    actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    task = actions.continue_task(task, message=MESSAGE)
    assert task.state == "working" and task.pending_message == MESSAGE
    assert list(task.events.order_by("seq").values_list("kind", flat=True))[-2:] == ["message", "state"]


@pytest.mark.django_db
def test_the_agent_rule_of_create_holds_for_follow_ups(org: Any, other_org: Any, alice: Any) -> None:
    """A follow-up reached the task's agent after its owner made it private or deleted it: the task keeps its
    agent, and continue_task sent to it without asking whether the org may still use it."""
    from apps.agents import actions as agent_actions
    from apps.agents.models import Agent, Visibility

    theirs = make_agent(other_org, "shared", visibility=Visibility.PUBLIC)
    mine = make_agent(org, "mine")
    waiting = {}
    for agent in (theirs, mine):
        task = actions.create_task(org=org, agent=agent, message=MESSAGE)
        waiting[agent.slug] = actions.record(task, [Observation(kind="state", data={}, state="input-required")])
    agent_actions.set_visibility(theirs, Visibility.PRIVATE)
    assert agent_actions.delete_agent(mine, by=alice) is False  # it has a task: retired
    retired = Agent.with_retired.for_org(org).get(pk=mine.pk)
    for slug, reason in (("shared", "unavailable"), ("mine", "retired")):
        with pytest.raises(actions.AgentNotUsable) as refused:
            actions.continue_task(waiting[slug], message=MESSAGE)
        assert refused.value.reason == reason
        task = Task.objects.for_org(org).get(pk=waiting[slug].pk)
        assert (task.state, task.last_seq, task.pending_message) == ("input-required", waiting[slug].last_seq, None)
    # The same rule refuses a new task on the retired agent (the selectors never hand one out).
    with pytest.raises(actions.AgentNotUsable):
        actions.create_task(org=org, agent=retired, message=MESSAGE)
    # Public again, the waiting task takes its follow-up.
    agent_actions.set_visibility(Agent.objects.for_org(other_org).get(pk=theirs.pk), Visibility.PUBLIC)
    assert actions.continue_task(waiting["shared"], message=MESSAGE).state == "working"


@pytest.mark.django_db(transaction=True)
def test_concurrent_recorders_get_dense_unique_seqs(org: Any) -> None:
    agent = make_agent(org)
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                actions.record(task, [Observation(kind="progress", data={"n": n, "i": i})])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = list(TaskEvent.objects.for_org(org).filter(task=task).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 43))
    assert Task.objects.for_org(org).get(pk=task.pk).last_seq == 42


def test_messages_from_other_apps_are_normalized_or_refused() -> None:
    assert actions.normalize_message({"parts": [{"text": "a"}, {"data": {"b": 1}}]}) == {
        "role": "user",
        "parts": [{"text": "a", "kind": "text"}, {"data": {"b": 1}, "kind": "data"}],
    }
    for bad in ({"parts": []}, {"parts": [{"url": "x"}]}, {"parts": [{"kind": "text"}]}):
        with pytest.raises(actions.InvalidMessage):
            actions.normalize_message(bad)
    # What a peer's request may carry but no agent could be sent (this reached the agent and failed there).
    refused = {
        "part 1: 'text' must be a string, not int": {"parts": [{"text": 123}]},
        "part 1 must be an object with text or data, not str": {"parts": ["garbage", {"foo": 1}]},
        "a message is an object with a list of parts": {"parts": "text"},
        "part 2: 'data' must be a JSON object, not list": {"parts": [{"text": "a"}, {"data": [1]}]},
        "part 1's data nests 25 levels deep; agents accept at most 24": {"parts": [{"data": nested(25)}]},
        "part 1's metadata nests 33 levels deep": {"parts": [{"text": "a", "metadata": nested(33)}]},
        "the message's metadata nests 40 levels deep": {"parts": [{"text": "a"}], "metadata": nested(40)},
        # It reached the agent as 9007199254740992 (numbers travel as 64-bit floats), with no error anywhere.
        "part 1's data holds the integer 9007199254740993, which an agent would receive rounded": {
            "parts": [{"data": {"ids": [1, {"id": 2**53 + 1}]}}]
        },
        "the message's metadata holds the integer -12345678901234567890": {
            "parts": [{"text": "a"}],
            "metadata": {"n": -12345678901234567890},
        },
    }
    for reason, bad in refused.items():
        with pytest.raises(actions.InvalidMessage, match=re.escape(reason)):
            actions.normalize_message(bad)
    assert actions.normalize_message({"parts": [{"data": nested(24)}]})["parts"][0]["data"] == nested(24)
    exact = {"max": 2**53 - 1, "min": -(2**53 - 1), "flag": True, "big_float": 1e300}
    assert actions.normalize_message({"parts": [{"data": exact}]})["parts"][0]["data"] == exact


def test_json_depth() -> None:
    assert [actions.json_depth(v) for v in (1, "x", {}, {"a": 1}, {"a": [1]}, [[], {"b": {"c": None}}])] == [
        0,
        0,
        1,
        1,
        2,
        3,
    ]


@pytest.mark.django_db
def test_an_agents_answer_with_characters_postgres_cannot_store_is_recorded_not_lost(org: Any, agent: Any) -> None:
    # An agent's artifact with a NUL used to fail the completed task with the INSERT's SQL as its error.
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    artifact = {
        "artifact_id": "a1",
        "parts": [{"kind": "text", "text": "a\x00b"}, {"kind": "data", "data": {"x": float("nan")}}],
    }
    failure = {"message": {"role": "agent", "parts": [{"kind": "text", "text": "p\x00q \ud800"}]}}
    task = actions.record(
        task,
        [
            Observation(kind="state", data={}, state=TaskState.WORKING),
            Observation(kind="artifact", data=artifact),
            Observation(kind="state", data=failure, state=TaskState.FAILED),
        ],
    )
    task.refresh_from_db()
    assert task.state == TaskState.FAILED and task.last_error == "p\ufffdq \ufffd"
    stored = task.events.get(kind="artifact").data
    assert stored["parts"] == [{"kind": "text", "text": "a\ufffdb"}, {"kind": "data", "data": {"x": "NaN"}}]


@pytest.mark.django_db
def test_each_turn_of_a_conversation_has_its_own_retries(org: Any, agent: Any, settings: Any, monkeypatch: Any) -> None:
    # Counted on the whole task, five follow-ups used up HERMES_TASK_MAX_ATTEMPTS and the next transport error
    # failed the task at once, without a retry.
    from apps.agents.client import AgentTransportError
    from apps.tasks import tasks as jobs

    settings.HERMES_TASK_MAX_ATTEMPTS = 3
    monkeypatch.setattr(jobs, "dispatch", lambda *args, **kwargs: None)
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    for turn in range(5):  # five turns, each answered on its first run
        actions.record(task, [Observation(kind="state", data={}, state="input-required", remote_task_id="r1")])
        task = actions.continue_task(Task.objects.for_org(org).get(pk=task.pk), message=MESSAGE)
    Task.objects.for_org(org).filter(pk=task.pk).update(attempts=6)
    refused = AgentTransportError("The agent answered HTTP 500.")
    for _ in range(2):
        jobs._transport_failure(task, refused)
    task.refresh_from_db()
    retries = [e.data["attempt"] for e in task.events.filter(kind="retry").order_by("seq")]
    assert task.state == "working" and retries == [1, 2]
    jobs._transport_failure(task, refused)  # the third attempt of this turn was the last
    task.refresh_from_db()
    assert (
        task.state == "failed"
        and task.last_error == "gave up after 3 attempts: AgentTransportError: The agent answered HTTP 500."
    )


@pytest.mark.django_db
def test_agent_output_past_the_event_limit_is_left_out_with_a_note(org: Any, agent: Any, settings: Any) -> None:
    settings.HERMES_MAX_EVENT_BYTES = 4096
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    small = {"kind": "text", "text": "summary"}
    huge = {"kind": "text", "text": "x" * 10_000}
    artifact = {"artifact_id": "a", "name": "report", "parts": [small, huge], "append": False, "last_chunk": True}
    line = {"role": "agent", "parts": [{"kind": "data", "data": {"blob": "y" * 9_000}}]}
    actions.record(
        task,
        [
            Observation(kind="artifact", data=artifact, state=None),
            Observation(kind="progress", data=line, state="working"),
            Observation(kind="state", data={"message": line}, state="completed"),
        ],
    )
    events = {e.seq: e.data for e in TaskEvent.objects.for_org(org).filter(task=task)}
    kept = [events[seq] for seq in sorted(events)][-4:]  # artifact, progress, working, completed
    note = "[a text part of 10,025 bytes was not kept: over the 4,096-byte event limit]"
    assert kept[0]["parts"] == [small, {"kind": "text", "text": note, "metadata": {"hermes_dropped_bytes": 10_025}}]
    assert kept[0]["name"] == "report"
    assert kept[1]["parts"][0]["text"].startswith("[a data part of 9,")
    assert kept[3]["message"]["parts"][0]["text"].startswith("[a data part of 9,")
    assert kept[3]["to"] == "completed"


def test_the_heartbeat_says_once_that_the_database_is_down(monkeypatch: Any, caplog: Any) -> None:
    # It logged an ERROR with a traceback every 0.5 s for as long as the outage lasted.
    from django.db import OperationalError

    from apps.core import checks
    from apps.tasks import tasks as jobs

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(jobs.Task.objects, "unscoped", unreachable)
    monkeypatch.setattr(checks, "database_reachable", lambda: False)
    heartbeat = jobs.Heartbeat("t1", "w1", on_cancel=lambda: None, on_lost=lambda: None)
    with caplog.at_level(logging.INFO, logger="apps.tasks.tasks"):
        for _ in range(3):
            heartbeat.watch()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "task t1: the database is unreachable; the heartbeat waits for it")
    ]
    assert not heartbeat.lost.is_set()  # the claim is not given up for an outage


@pytest.mark.django_db
def test_a_retry_waits_as_long_as_the_agent_asked(org: Any, agent: Any, settings: Any, monkeypatch: Any) -> None:
    from apps.agents.client import AgentTransportError
    from apps.tasks import tasks as jobs

    sent: list[float] = []
    monkeypatch.setattr(jobs, "dispatch", lambda task_id, countdown=0, **kw: sent.append(countdown))
    settings.HERMES_TASK_RETRY_BASE_SECONDS, settings.HERMES_TASK_RETRY_MAX_SECONDS = 0.1, 20
    task = actions.create_task(org=org, agent=agent, message=MESSAGE)
    busy = AgentTransportError("The agent answered HTTP 429 (Too Many Requests).", status_code=429, retry_after=30)
    jobs._transport_failure(task, busy)
    assert sent == [20]  # as asked, within the ceiling (a 1 s backoff used to call it again at once)
    assert task.events.filter(kind="retry").get().data["delay"] == 20
