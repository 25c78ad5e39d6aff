"""Cross-org tasks in one process: the request, rejection by the executor, and the requester's mirrored timeline
built from correlated task_result messages (through the real send → deliver → receive → handle path)."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.agents import actions as agent_actions
from apps.core.errors import HermesAPIError
from apps.federation import actions, remote_tasks
from apps.federation.models import (
    Effect,
    FederationAuditEvent,
    InboxEntry,
    Message,
    MessageType,
    Outbox,
    OutboxStatus,
    RemoteTask,
)

MESSAGE = {"role": "user", "parts": [{"kind": "text", "text": "hello"}]}


@pytest.fixture
def acme_may_ask_globex(org: Any, other_org: Any) -> None:
    # acme may send to globex and globex accepts acme; nothing lets globex write to acme on its own.
    actions.set_policy(org=org, remote="globex", effect=Effect.ALLOW)
    actions.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)


def report(globex: Any, remote: RemoteTask, seq: int, kind: str, data: dict[str, Any], state: str) -> None:
    """What the executor sends for each recorded event of the task it runs for acme."""
    actions.send_message(
        org=globex,
        recipient="acme",
        type=MessageType.TASK_RESULT,
        sender_agent="echo",
        correlation_id=remote.request_id,
        payload={"task_id": "t-42", "seq": seq, "kind": kind, "data": data, "state": state},
        reply=True,
    )


@pytest.mark.django_db
def test_unknown_agent_is_rejected_back_to_the_requester(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="nobody.globex", message=MESSAGE)
    entry = InboxEntry.objects.for_org(other_org).get(message_id=remote.request_id)
    assert entry.type == MessageType.TASK_REQUEST and entry.payload["message"] == MESSAGE
    remote.refresh_from_db()
    assert remote.state == "rejected" and "no agent 'nobody'" in remote.error
    assert [(e.seq, e.state) for e in remote.events.all()] == [(0, "rejected")]
    # The rejection travelled as a reply: globex sent it without an outbound rule, acme accepted it without an
    # inbound rule for globex (it answers acme's own request).
    reply = InboxEntry.objects.for_org(org).get(correlation_id=remote.request_id)
    assert reply.type == MessageType.TASK_RESULT and reply.sender == "nobody.globex"
    assert not FederationAuditEvent.objects.for_org(org).filter(event="policy_denied").exists()


@pytest.mark.django_db
def test_timeline_is_mirrored_in_remote_order_without_duplicates(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        remote = RemoteTask.objects.for_org(org).get(
            pk=actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE).pk
        )
    remote = RemoteTask.objects.for_org(org).get(pk=remote.pk)
    RemoteTask.objects.for_org(org).filter(pk=remote.pk).update(state="requested", last_seq=0, error="")
    remote.events.all().delete()
    # Delivered out of order, one of them twice (a redelivery with a new message id, as a sweeper could cause).
    reports = [
        (3, "artifact", {"parts": [{"kind": "text", "text": "HELLO"}]}, "working"),
        (1, "state", {"from": None, "to": "submitted"}, "submitted"),
        (2, "state", {"from": "submitted", "to": "working"}, "working"),
        (4, "state", {"from": "working", "to": "completed"}, "completed"),
        (2, "state", {"from": "submitted", "to": "working"}, "working"),
    ]
    for seq, kind, data, state in reports:
        with django_capture_on_commit_callbacks(execute=True):
            report(other_org, remote, seq, kind, data, state)
    remote.refresh_from_db()
    assert remote.state == "completed" and remote.remote_task_id == "t-42" and remote.last_seq == 4
    assert [(e.seq, e.kind) for e in remote.events.all()] == [(1, "state"), (2, "state"), (3, "artifact"), (4, "state")]
    # A late, stale event cannot move a finished task back.
    with django_capture_on_commit_callbacks(execute=True):
        report(other_org, remote, 5, "state", {"from": "completed", "to": "working"}, "working")
    remote.refresh_from_db()
    assert remote.state == "completed"


@pytest.mark.django_db
def test_results_for_unknown_requests_are_not_trusted(
    org: Any, other_org: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A task_result that answers no request of ours is an ordinary message: policy applies (default deny)."""
    import uuid

    actions.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)
    with django_capture_on_commit_callbacks(execute=True):
        message = actions.send_message(
            org=other_org,
            recipient="acme",
            type=MessageType.TASK_RESULT,
            correlation_id=uuid.uuid4(),
            payload={"seq": 1},
        )
    assert Outbox.objects.for_org(other_org).get(message=message).status == OutboxStatus.DEAD
    assert FederationAuditEvent.objects.for_org(org).filter(event="policy_denied").count() == 1


def test_a_result_for_a_request_never_sent_is_recorded_and_logged_in_one_line(
    org: Any, other_org: Any, django_capture_on_commit_callbacks: Any, caplog: Any
) -> None:
    import uuid

    from apps.federation.models import InboxEntry

    actions.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)
    actions.set_policy(org=org, remote="globex", effect=Effect.ALLOW)
    with (
        caplog.at_level("WARNING", logger="apps.federation.handlers"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        message = actions.send_message(
            org=other_org, recipient="acme", type=MessageType.TASK_RESULT, correlation_id=uuid.uuid4(), payload={}
        )
    entry = InboxEntry.objects.for_org(org).get(message_id=message.id)
    assert entry.handling_error.startswith("Unrelated: no remote task for request")
    lines = [r for r in caplog.records if r.name == "apps.federation.handlers"]
    assert lines and all(r.levelname == "WARNING" and not r.exc_info for r in lines)  # was an ERROR traceback


@pytest.mark.django_db
def test_remote_task_api(
    client_for: Any, alice: Any, mia: Any, charlie: Any, org: Any, other_org: Any, settings: Any
) -> None:
    from apps.tasks.models import Task

    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    api = client_for(alice)
    created = api.post("/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": MESSAGE}, format="json")
    assert created.status_code == 202, created.content
    body = created.json()
    assert body["agent_address"] == "echo.globex" and body["delivery"]["status"] in ("pending", "delivered")
    assert api.get(f"/api/v1/federation/remote-tasks/{body['id']}").json()["id"] == body["id"]
    assert client_for(charlie).get(f"/api/v1/federation/remote-tasks/{body['id']}").status_code == 404
    refused = client_for(mia).post(
        "/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": MESSAGE}, format="json"
    )
    assert refused.status_code == 403 and refused.json()["error"]["details"]["required_action"] == "federation:write"
    task = Task.objects.for_org(org).get(pk=body["task_id"])
    waited = (task.deadline_at - task.created_at).total_seconds()
    assert abs(waited - settings.HERMES_TASK_DEADLINE_SECONDS) < 5  # the default wait
    patient = api.post(
        "/api/v1/federation/remote-tasks",
        {"agent": "echo.globex", "message": MESSAGE, "deadline_seconds": 7200},
        format="json",
    )
    task = Task.objects.for_org(org).get(pk=patient.json()["task_id"])
    assert abs((task.deadline_at - task.created_at).total_seconds() - 7200) < 5
    bad = api.post("/api/v1/federation/remote-tasks", {"agent": "globex", "message": MESSAGE}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_address"
    bad = api.post("/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": {"parts": []}}, format="json")
    assert bad.status_code == 400 and "message" in bad.json()["error"]["details"]
    # Sizes are measured as stored (UTF-8), as POST /tasks measures them: 120 KB of "é" fits however it is escaped,
    # and a message past the limit is the same 413 as there.
    wide = {"parts": [{"text": "é" * 60_000}]}
    assert (
        api.post(
            "/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": wide}, format="json"
        ).status_code
        == 202
    )
    huge = {"parts": [{"text": "x" * (settings.HERMES_MAX_TASK_INPUT_BYTES + 1)}]}
    too_large = api.post("/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": huge}, format="json")
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "input_too_large"
    # The address is refused under the field the caller named, `agent` (messages call it `recipient`).
    for address, code in (("echo.nobody", "unknown_recipient"), ("echo.globex@nowhere", "unknown_peer")):
        error = api.post("/api/v1/federation/remote-tasks", {"agent": address, "message": MESSAGE}, format="json")
        assert error.json()["error"]["code"] == code and list(error.json()["error"]["details"]) == ["agent"]
    for parts, reason in (
        (["garbage", {"foo": 1}], "part 1 must be an object with text or data, not str"),  # was a 500
        ([{"text": 123}], "part 1: 'text' must be a string, not int"),  # was a 202, then failed at the agent
    ):
        bad = api.post(
            "/api/v1/federation/remote-tasks", {"agent": "echo.globex", "message": {"parts": parts}}, format="json"
        )
        assert bad.status_code == 400 and bad.json()["error"]["details"] == {"message": [reason]}
    with pytest.raises(HermesAPIError):
        actions.request_remote_task(org=org, agent="echo.globex@nowhere", message=MESSAGE)


def _globex_runs_task_77(org: Any, other_org: Any, callbacks: Any) -> tuple[RemoteTask, Any]:
    """acme's request to echo.globex, its mirror emptied, and globex's side linked to a task 77 that
    `report_task_event` reads as the tasks app's signal hands it over (a stand-in with the fields it reads)."""
    from types import SimpleNamespace

    from apps.federation.models import FederatedTask

    with callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    remote = RemoteTask.objects.for_org(org).get(pk=remote.pk)
    remote.events.all().delete()
    RemoteTask.objects.for_org(org).filter(pk=remote.pk).update(state="requested", error="")
    entry = InboxEntry.objects.for_org(other_org).get(message_id=remote.request_id)
    FederatedTask.objects.create(
        organization=other_org, task_id="77", inbox_entry=entry, agent_slug="echo", reply_to=entry.sender,
        correlation_id=entry.message_id,
    )  # fmt: skip
    task = SimpleNamespace(pk=77, organization_id=other_org.pk, state="working", metadata={"federation": {}})
    return remote, task


@pytest.mark.django_db
def test_executor_reports_each_task_event_back_to_the_requester(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    """`report_task_event` as the tasks app's `task_event_recorded` signal calls it (the task and the event, after
    commit). The stand-ins carry the fields it reads; the real task path runs in test_two_instances.py."""
    from types import SimpleNamespace

    from apps.federation.remote_tasks import report_task_event

    remote, task = _globex_runs_task_77(org, other_org, django_capture_on_commit_callbacks)
    unrelated = SimpleNamespace(pk=78, organization_id=other_org.pk, state="working", metadata={})
    with django_capture_on_commit_callbacks(execute=True):
        report_task_event(task=task, event=SimpleNamespace(seq=1, kind="state", data={"from": None, "to": "submitted"}))
        report_task_event(task=task, event=SimpleNamespace(seq=2, kind="message", data={"role": "agent"}))
        report_task_event(task=unrelated, event=SimpleNamespace(seq=1, kind="state", data={"to": "working"}))
    remote.refresh_from_db()
    assert remote.remote_task_id == "77" and remote.state == "working"
    assert [(e.seq, e.kind, e.state) for e in remote.events.all()] == [
        (1, "state", "submitted"),
        (2, "message", "working"),
    ]


@pytest.mark.django_db
def test_handler_failures_are_recorded_and_unhandled_entries_redriven(
    org: Any, other_org: Any, django_capture_on_commit_callbacks: Any
) -> None:
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from apps.federation.handlers import handle, redrive_unhandled
    from apps.federation.tasks import sweep_outbox

    # A task_result for a request we never sent: its handler fails, the failure is recorded, not retried forever.
    entry = InboxEntry.objects.create(
        organization=org, message_id=uuid.uuid4(), sender="globex", type=MessageType.TASK_RESULT,
        correlation_id=uuid.uuid4(), payload={"seq": 1}, receipt={},
    )  # fmt: skip
    InboxEntry.objects.for_org(org).filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert redrive_unhandled() == 1  # lost its job (broker down): the sweeper runs it (eager here)
    entry.refresh_from_db()
    assert entry.handled_at is not None and entry.handling_error.startswith("Unrelated: no remote task")
    handle(entry.pk)  # handled entries are never run twice
    assert sweep_outbox()["redriven"] == 0


# --- The requester's own task -----------------------------------------------------------------------------------


def _own_task(org: Any, remote: RemoteTask) -> Any:
    from apps.tasks.models import Task

    return Task.objects.for_org(org).select_related("agent").get(pk=remote.task_id)


@pytest.fixture
def undelivered(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> tuple[RemoteTask, Any]:
    """acme's request to echo.globex and acme's own task for it, written but not delivered: a test's reports
    stand in for globex."""
    with django_capture_on_commit_callbacks(execute=False):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    return remote, _own_task(org, remote)


@pytest.mark.django_db
def test_the_requester_follows_the_remote_task_in_its_own_task_views(
    org: Any, other_org: Any, alice: Any, client_for: Any, undelivered: Any, django_capture_on_commit_callbacks: Any
) -> None:
    remote, task = undelivered
    assert task.agent.federation_address == "echo.globex" and task.state == "submitted"
    assert task.next_attempt_at is None  # no worker here runs it, so the sweeper never re-dispatches it
    reports = [  # out of order and once twice, as parallel deliveries and a redelivery can bring them
        (3, "state", {"from": "submitted", "to": "working"}, "working"),
        (1, "state", {"from": None, "to": "submitted"}, "submitted"),
        (4, "artifact", {"parts": [{"kind": "text", "text": "HELLO"}]}, "working"),
        (2, "message", {"role": "user", **MESSAGE}, "submitted"),
        (5, "state", {"from": "working", "to": "completed"}, "completed"),
        (3, "state", {"from": "submitted", "to": "working"}, "working"),
    ]
    applied = []
    for seq, kind, data, state in reports:
        with django_capture_on_commit_callbacks(execute=True):
            report(other_org, remote, seq, kind, data, state)
        remote.refresh_from_db()
        applied.append(remote.applied_seq)
    # Nothing is applied past a gap; each arrival applies whatever now follows in order.
    assert applied == [0, 1, 1, 4, 5, 5]
    task.refresh_from_db()
    assert task.state == "completed"
    assert task.agent.__class__.objects.for_org(org).get(pk=task.agent_id).is_online  # it reported just now
    api = client_for(alice)
    listed = api.get("/api/v1/tasks", {"agent": str(task.agent_id)}).json()["results"]
    assert [row["id"] for row in listed] == [str(task.pk)] and listed[0]["agent"]["name"] == "echo.globex"
    events = api.get(f"/api/v1/tasks/{task.pk}/events").json()["results"]
    # Its own submitted + input, then the remote working, artifact and completed, each once, in remote order.
    assert [(e["kind"], e["data"].get("to")) for e in events] == [
        ("state", "submitted"),
        ("message", None),
        ("state", "working"),
        ("artifact", None),
        ("state", "completed"),
    ]
    assert events[2]["data"]["remote_seq"] == 3 and events[3]["data"]["parts"][0]["text"] == "HELLO"
    page = api.get(f"/tasks/{task.pk}/")
    assert page.status_code == 200 and b"echo.globex" in page.content and b"through federation" in page.content


@pytest.mark.django_db
def test_the_executors_failure_reason_is_the_requesters_last_error(
    other_org: Any, alice: Any, client_for: Any, undelivered: Any, django_capture_on_commit_callbacks: Any
) -> None:
    remote, task = undelivered
    reports = [
        (1, "state", {"from": None, "to": "submitted"}, "submitted"),
        (2, "state", {"from": "submitted", "to": "working"}, "working"),
        (3, "state", {"from": "working", "to": "failed", "error": "agent unreachable after 5 attempts"}, "failed"),
    ]
    for seq, kind, data, state in reports:
        with django_capture_on_commit_callbacks(execute=True):
            report(other_org, remote, seq, kind, data, state)
    # It was only in the timeline: the API's and the console's `last_error` said nothing of why it failed.
    body = client_for(alice).get(f"/api/v1/tasks/{task.pk}").json()
    assert body["status"] == "failed" and body["last_error"] == "agent unreachable after 5 attempts"


@pytest.mark.django_db
def test_a_rejected_request_fails_the_requesters_task_at_once(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="nobody.globex", message=MESSAGE)
    task = _own_task(org, remote)
    assert task.state == "rejected"
    last = task.events.order_by("-seq").first()
    assert "no agent 'nobody'" in last.data["reason"]
    assert "no agent 'nobody'" in task.last_error  # what the API and the console show as the reason
    # globex answered, but no agent of its did: the federated agent is not shown online, and says why.
    agent = task.agent.__class__.objects.for_org(org).get(pk=task.agent_id)
    assert not agent.is_online and "no agent 'nobody'" in agent.last_error


@pytest.mark.django_db
def test_post_tasks_to_a_federated_agent_sends_a_task_request(
    org: Any, alice: Any, client_for: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    agent = agent_actions.federated_agent(org, "echo.globex")
    assert agent_actions.federated_agent(org, "echo.globex") == agent  # one row per address
    api = client_for(alice)
    with django_capture_on_commit_callbacks(execute=False):
        created = api.post("/api/v1/tasks", {"agent": str(agent.pk), "input": MESSAGE}, format="json")
    assert created.status_code == 202, created.content
    remote = RemoteTask.objects.for_org(org).select_related("request").get(task_id=created.json()["id"])
    assert remote.request.type == MessageType.TASK_REQUEST and remote.request.payload["message"]["parts"]


@pytest.mark.django_db
def test_a_refused_request_creates_no_task(
    org: Any, other_org: Any, alice: Any, client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.tasks.models import Task

    agent = agent_actions.federated_agent(org, "echo.globex")
    actions.set_policy(org=org, remote="globex", effect=Effect.DENY)
    refused = client_for(alice).post("/api/v1/tasks", {"agent": str(agent.pk), "input": MESSAGE}, format="json")
    assert refused.status_code == 403, refused.content
    assert not Task.objects.for_org(org).exists() and not RemoteTask.objects.for_org(org).exists()
    # The refusal is audited although the transaction it happened in rolled back.
    denied = FederationAuditEvent.objects.for_org(org).get(event="policy_denied")
    assert "echo.globex" in denied.reason


@pytest.mark.django_db
def test_a_denied_send_under_an_idempotency_key_keeps_its_audit_row(
    org: Any, other_org: Any, alice: Any, client_for: Any
) -> None:
    actions.set_policy(org=org, remote="globex", effect=Effect.DENY)
    refused = client_for(alice).post(
        "/api/v1/federation/messages",
        {"recipient": "globex", "payload": {"hello": 1}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="deny-1",
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "policy_denied"
    assert FederationAuditEvent.objects.for_org(org).filter(event="policy_denied").count() == 1


@pytest.fixture
def globex_holds_the_task(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> tuple[RemoteTask, Any]:
    """acme asks globex's echo agent; globex accepts the task but no worker picks it up (the test plays the
    worker): it waits, submitted, as a busy executor's would. Returns acme's RemoteTask and globex's Task."""
    from apps.agents.models import Agent
    from apps.tasks.models import Task

    Agent.objects.create(organization=other_org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    monkeypatch.setattr("apps.tasks.tasks.dispatch", lambda *args, **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    theirs = Task.objects.for_org(other_org).get()
    assert theirs.state == "submitted"
    return remote, theirs


def _globex_asks_a_question(org: Any, remote: RemoteTask, theirs: Any, capture: Any) -> Any:
    """globex's agent starts and asks for input; returns acme's own task, which mirrors that."""
    from apps.tasks import actions as task_actions

    question = {"role": "agent", "parts": [{"kind": "text", "text": "Which language?"}]}
    for state, data in (("working", {}), ("input-required", {"message": question})):
        with capture(execute=True):
            task_actions.record(theirs, [task_actions.Observation(kind="state", data=data, state=state)])
    ours = _own_task(org, remote)
    assert ours.state == "input-required"  # mirrored from globex
    return ours


@pytest.mark.django_db
def test_cancel_is_relayed_to_the_executor(
    org: Any, other_org: Any, alice: Any, charlie: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_the_task
    # globex's own page of the task says who asked for it.
    globex_page = client_for(charlie).get(f"/tasks/{theirs.pk}/").content.decode()
    assert "acme" in globex_page and "through federation" in globex_page
    api = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        canceled = api.post(f"/api/v1/tasks/{remote.task_id}/cancel")
    assert canceled.status_code == 202, canceled.content
    theirs.refresh_from_db()
    assert theirs.state == "canceled"
    assert theirs.events.get(seq=theirs.last_seq).data["reason"] == "canceled by the requester acme"
    remote.refresh_from_db()
    assert remote.state == "canceled"  # globex reported its cancel back; acme's task was canceled already
    assert _own_task(org, remote).state == "canceled"
    # The relay is a message of its own, correlated to the request.
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_CANCEL).correlation_id == remote.request_id


@pytest.mark.django_db
def test_a_cancel_is_relayed_whatever_the_callers_metadata_says(
    org: Any, other_org: Any, alice: Any, client_for: Any, acme_may_ask_globex: None, monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.agents.models import Agent
    from apps.tasks.models import Task

    # The executor marks the tasks it runs for others with metadata["federation"]; on the requester's side that key
    # is the caller's own, and it used to make the requester's cancel stay home.
    Agent.objects.create(organization=other_org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    monkeypatch.setattr("apps.tasks.tasks.dispatch", lambda *args, **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(
            org=org, agent="echo.globex", message=MESSAGE, metadata={"federation": "mine"}
        )
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(alice).post(f"/api/v1/tasks/{remote.task_id}/cancel").status_code == 202
    assert Task.objects.for_org(other_org).get().state == "canceled"
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_CANCEL).correlation_id == remote.request_id


@pytest.mark.django_db
def test_a_follow_up_is_relayed_to_the_executors_waiting_task(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_the_task
    ours = _globex_asks_a_question(org, remote, theirs, django_capture_on_commit_callbacks)
    answer = {"role": "user", "parts": [{"kind": "text", "text": "French"}]}
    with django_capture_on_commit_callbacks(execute=True):
        replied = client_for(alice).post(f"/api/v1/tasks/{ours.pk}/messages", {"input": answer}, format="json")
    assert replied.status_code == 202, replied.content
    theirs.refresh_from_db()
    assert theirs.state == "working" and theirs.pending_message["parts"][0]["text"] == "French"
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_INPUT).correlation_id == remote.request_id
    ours.refresh_from_db()
    assert ours.state == "working"
    # The answer is on acme's timeline once: globex's echo of it (a user message) is not mirrored again.
    texts = [e.data["parts"][0]["text"] for e in ours.events.filter(kind="message").order_by("seq")]
    assert texts.count("French") == 1


@pytest.mark.django_db
def test_canceling_or_answering_a_federated_task_needs_federation_write(
    org: Any, alice: Any, mia: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.core.models import AuditEvent as CoreAuditEvent
    from tests.factories import issue_api_key, key_client

    remote, theirs = globex_holds_the_task
    ours = _globex_asks_a_question(org, remote, theirs, django_capture_on_commit_callbacks)
    _, tasks_only = issue_api_key(alice, org, scopes=["tasks:read", "tasks:write"])
    answer = {"input": {"parts": [{"text": "French"}]}}
    for api, code in ((client_for(mia), "role_forbidden"), (key_client(tasks_only), "missing_scope")):
        for url, body in ((f"/api/v1/tasks/{ours.pk}/messages", answer), (f"/api/v1/tasks/{ours.pk}/cancel", None)):
            with django_capture_on_commit_callbacks(execute=True):
                refused = api.post(url, body, format="json")
            assert refused.status_code == 403, (url, refused.content)
            error = refused.json()["error"]
            detail = "required_scope" if code == "missing_scope" else "required_action"
            assert error["code"] == code and error["details"] == {detail: "federation:write"}
    # The console does not offer either to a member, and refuses a post made anyway.
    page = client_for(mia).get(f"/tasks/{ours.pk}/").content.decode()
    assert f"/tasks/{ours.pk}/cancel/" not in page and f"/tasks/{ours.pk}/reply/" not in page
    assert client_for(mia).post(f"/tasks/{ours.pk}/cancel/").status_code == 403
    # Nothing moved, on either side, and nothing was relayed.
    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert ours.state == "input-required" and theirs.state == "input-required"
    assert not Message.objects.for_org(org).filter(type__in=[MessageType.TASK_CANCEL, MessageType.TASK_INPUT]).exists()
    assert not CoreAuditEvent.objects.filter(org_id=org.pk, action__in=["task.canceled", "task.continued"]).exists()
    # The owner, whose session has federation:write, still answers.
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(alice).post(f"/api/v1/tasks/{ours.pk}/messages", answer, format="json").status_code == 202


@pytest.mark.django_db
def test_a_cancel_that_overtakes_its_request_refuses_the_request(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.agents.models import Agent
    from apps.tasks.models import Task

    Agent.objects.create(organization=other_org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    # The request is written but still on its way (its delivery job has not run)...
    with django_capture_on_commit_callbacks(execute=False) as in_flight:
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    # ...when the cancel for it, sent separately, reaches globex first: nothing to cancel there yet.
    with django_capture_on_commit_callbacks(execute=True):
        remote_tasks._relay(remote, MessageType.TASK_CANCEL, {"reason": "canceled by the requester"})
    cancel = InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_CANCEL)
    assert cancel.handling_error.endswith("yet (the request is refused if it comes)")
    # The request arrives after all: no task runs for it, and acme hears why.
    with django_capture_on_commit_callbacks(execute=True):
        for callback in in_flight:
            callback()
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_REQUEST).handled_at is not None
    assert not Task.objects.for_org(other_org).exists()
    remote.refresh_from_db()
    assert remote.state == "rejected" and remote.error == "canceled by the requester before the request arrived"


@pytest.mark.django_db
def test_a_federated_agent_stays_private_and_keeps_its_address(org: Any) -> None:
    from apps.agents.actions import AgentActionError, update_agent

    # A local agent already holds the slug the address would get: the federated row takes the next one.
    agent_actions.register_agent_manually(
        org=org, name="Mine", url="https://agent.example.com/rpc", slug="fed-echoglobex-at-berlin"
    )
    agent = agent_actions.federated_agent(org, "echo.globex@berlin")
    assert agent.slug == "fed-echoglobex-at-berlin-2" and agent.is_federated
    assert agent_actions.federated_agent(org, "echo.globex@berlin") == agent
    for change in ({"visibility": "public"}, {"url": "http://example.com/"}):
        with pytest.raises(AgentActionError):
            update_agent(agent, **change)


@pytest.fixture
def refused_request(
    org: Any, other_org: Any, alice: Any, django_capture_on_commit_callbacks: Any
) -> tuple[RemoteTask, Any]:
    """acme asks echo.globex, but globex has no rule for acme (default deny): globex answers 403 and the request
    is dead-lettered at once. Returns acme's RemoteTask and its own task."""
    from apps.agents.models import Agent

    Agent.objects.create(organization=other_org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    actions.set_policy(org=org, remote="globex", effect=Effect.ALLOW)
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE, actor=alice)
    assert Outbox.objects.for_org(org).get(message_id=remote.request_id).status == OutboxStatus.DEAD
    return remote, _own_task(org, remote)


@pytest.mark.django_db
def test_a_refused_request_says_why_on_the_task_and_leaves_the_agent_uncontacted(
    org: Any, alice: Any, client_for: Any, refused_request: tuple[RemoteTask, Any]
) -> None:
    remote, task = refused_request
    why = "permanent failure (HTTP 403: policy_denied: echo.globex does not accept messages from acme.)"
    # The peer's own code and message, not just "HTTP 403": on the dead letter and on the task's error event.
    row = Outbox.objects.for_org(org).get(message_id=remote.request_id)
    assert row.last_error == "HTTP 403: policy_denied: echo.globex does not accept messages from acme."
    last = task.events.order_by("-seq").first()
    assert last.kind == "error" and last.data["error"].endswith(why)
    # Still submitted (a requeue can deliver it), but lists and the task page show the reason.
    assert (
        task.state == "submitted"
        and task.last_error == f"the task request could not be delivered to echo.globex: {why}"
    )
    listed = client_for(alice).get("/api/v1/tasks").json()["results"]
    assert listed[0]["last_error"] == task.last_error
    remote.refresh_from_db()
    assert remote.state == "requested" and remote.error == task.last_error  # Federation → Remote tasks shows it too
    # A refusal is no sign of the agent being down: it is not given an error (its badge says "not contacted yet").
    assert task.agent.last_error == "" and task.agent.last_error_at is None


@pytest.mark.django_db
def test_canceling_a_task_whose_request_is_dead_settles_the_dead_letter(
    org: Any, alice: Any, client_for: Any, refused_request: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, task = refused_request
    api = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        canceled = api.post(f"/api/v1/tasks/{task.pk}/cancel")
    assert canceled.status_code == 202, canceled.content
    assert _own_task(org, remote).state == "canceled"
    # globex never got the request: no cancel is sent (it would be refused and dead-lettered in turn), and the
    # dead request is discarded so no requeue can start a task nobody waits for.
    assert not Message.objects.for_org(org).filter(type=MessageType.TASK_CANCEL).exists()
    assert Outbox.objects.for_org(org).get(message_id=remote.request_id).status == OutboxStatus.DISCARDED
    discarded = FederationAuditEvent.objects.for_org(org).get(event="discarded", message_id=remote.request_id)
    assert "ended here (canceled) before delivery" in discarded.reason
    remote.refresh_from_db()
    assert remote.state == "canceled" and "policy_denied" in remote.error
    assert api.post(f"/api/v1/federation/dlq/{remote.request_id}/requeue").status_code == 404


@pytest.mark.django_db
def test_requeue_clears_the_delivery_error_and_discard_fails_the_task(
    org: Any, other_org: Any, alice: Any, client_for: Any, refused_request: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, _ = refused_request
    api = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        requeued = api.post(f"/api/v1/federation/dlq/{remote.request_id}/requeue")
    assert requeued.status_code == 200, requeued.content
    # Refused again (globex's policy still denies), so the error is back; in between it was cleared.
    assert _own_task(org, remote).last_error.endswith("echo.globex does not accept messages from acme.)")
    actions.requeue([Outbox.objects.for_org(org).get(message_id=remote.request_id)])
    assert _own_task(org, remote).last_error == ""
    Outbox.objects.for_org(org).filter(message_id=remote.request_id).update(status=OutboxStatus.DEAD)
    with django_capture_on_commit_callbacks(execute=True):
        discarded = api.post(f"/api/v1/federation/dlq/{remote.request_id}/discard")
    assert discarded.status_code == 200, discarded.content
    # Given up for good: the task can never run, so it fails now instead of at its deadline.
    ended = _own_task(org, remote)
    assert ended.state == "failed" and "discarded from the dead-letter queue" in ended.last_error
    assert not Message.objects.for_org(org).filter(type=MessageType.TASK_CANCEL).exists()


@pytest.mark.django_db
def test_events_after_the_requesters_task_ended_are_not_appended(
    org: Any, other_org: Any, undelivered: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.tasks import actions as task_actions

    remote, task = undelivered
    with django_capture_on_commit_callbacks(execute=True):
        report(other_org, remote, 1, "state", {"from": None, "to": "submitted"}, "submitted")
        report(other_org, remote, 2, "state", {"from": "submitted", "to": "working"}, "working")
        task_actions.cancel_task(task)
    ended_at = _own_task(org, remote).last_seq
    # The executor was mid-run when the cancel left: its progress and message still arrive, then its cancel.
    reports = [
        (3, "progress", {"text": "step 3/5"}, "working"),
        (4, "message", {"role": "agent", "parts": [{"kind": "text", "text": "late"}]}, "working"),
        (5, "state", {"from": "working", "to": "canceled"}, "canceled"),
    ]
    for seq, kind, data, state in reports:
        with django_capture_on_commit_callbacks(execute=True):
            report(other_org, remote, seq, kind, data, state)
    task = _own_task(org, remote)
    assert task.state == "canceled" and task.last_seq == ended_at  # nothing appended after the end
    remote.refresh_from_db()
    assert remote.applied_seq == 5 and remote.events.count() == 5  # the raw mirror keeps every report


@pytest.mark.django_db
def test_a_refused_request_requeued_after_the_policy_is_fixed_completes(
    org: Any, other_org: Any, alice: Any, client_for: Any, refused_request: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any, monkeypatch: Any,
) -> None:  # fmt: skip
    from apps.tasks import actions as task_actions
    from apps.tasks.models import Task

    remote, _ = refused_request
    monkeypatch.setattr("apps.tasks.tasks.dispatch", lambda *args, **kwargs: None)  # the test plays globex's worker
    actions.set_policy(org=other_org, remote="acme", effect=Effect.ALLOW)  # globex's admin fixes the cause
    with django_capture_on_commit_callbacks(execute=True):
        requeued = client_for(alice).post(f"/api/v1/federation/dlq/{remote.request_id}/requeue")
    assert requeued.status_code == 200, requeued.content
    assert Outbox.objects.for_org(org).get(message_id=remote.request_id).status == OutboxStatus.DELIVERED
    theirs = Task.objects.for_org(other_org).get()
    for state in ("working", "completed"):
        with django_capture_on_commit_callbacks(execute=True):
            task_actions.record(theirs, [task_actions.Observation(kind="state", data={}, state=state)])
    ours = _own_task(org, remote)
    assert ours.state == "completed" and ours.last_error == ""  # the delivery error no longer holds
    remote.refresh_from_db()
    assert remote.state == "completed" and remote.error == ""


def _cancel(api: Any, task: Any, capture: Any) -> None:
    with capture(execute=True):
        assert api.post(f"/api/v1/tasks/{task.pk}/cancel").status_code == 202


@pytest.mark.django_db
def test_canceling_before_the_request_was_sent_withdraws_it(
    org: Any, other_org: Any, alice: Any, client_for: Any, undelivered: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, task = undelivered
    _cancel(client_for(alice), task, django_capture_on_commit_callbacks)
    # The request never leaves (so it cannot reach globex after the cancel and start a task nobody waits for),
    # and no cancel is sent for a request globex never saw.
    row = Outbox.objects.for_org(org).get(message_id=remote.request_id)
    assert row.status == OutboxStatus.WITHDRAWN and row.next_attempt_at is None
    assert actions.claim_delivery(row.pk) is None
    assert not Message.objects.for_org(org).filter(type=MessageType.TASK_CANCEL).exists()
    withdrawn = FederationAuditEvent.objects.for_org(org).get(event="withdrawn", message_id=remote.request_id)
    assert withdrawn.reason == f"its task {task.pk} ended here (canceled) before delivery"
    remote.refresh_from_db()
    assert remote.state == "canceled" and remote.error == "canceled here before the request was sent"
    assert not InboxEntry.objects.for_org(other_org).exists()


@pytest.mark.django_db
def test_canceling_while_a_failed_request_waits_for_its_retry_withdraws_it_and_cancels_there(
    org: Any, alice: Any, client_for: Any, undelivered: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.federation.delivery import AttemptOutcome, AttemptResult

    remote, task = undelivered
    row = actions.claim_delivery(Outbox.objects.for_org(org).get(message_id=remote.request_id).pk)
    # A timeout: globex may have stored the request even though no receipt came back.
    with django_capture_on_commit_callbacks(execute=False):
        assert actions.finish_attempt(row, AttemptResult(AttemptOutcome.RETRY, 5.0, error="timeout")) == "failed"
    _cancel(client_for(alice), task, django_capture_on_commit_callbacks)
    assert Outbox.objects.for_org(org).get(pk=row.pk).status == OutboxStatus.WITHDRAWN
    cancel = Message.objects.for_org(org).get(type=MessageType.TASK_CANCEL)
    assert cancel.correlation_id == remote.request_id
    remote.refresh_from_db()  # the mirror does not stay "requested" for a request that will never be delivered
    assert remote.state == "canceled" and "a cancel was sent in case an earlier attempt reached" in remote.error


@pytest.mark.django_db
def test_a_request_whose_task_was_canceled_during_its_attempt_is_not_retried(
    org: Any, alice: Any, client_for: Any, undelivered: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.federation.delivery import AttemptOutcome, AttemptResult

    remote, task = undelivered
    row = actions.claim_delivery(Outbox.objects.for_org(org).get(message_id=remote.request_id).pk)
    _cancel(client_for(alice), task, django_capture_on_commit_callbacks)  # while the attempt is in flight
    assert Message.objects.for_org(org).filter(type=MessageType.TASK_CANCEL).exists()  # it may have arrived
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        status = actions.finish_attempt(row, AttemptResult(AttemptOutcome.RETRY, 5.0, error="connection reset"))
    assert status == OutboxStatus.WITHDRAWN and not callbacks  # no retry is enqueued
    row.refresh_from_db()
    assert row.status == OutboxStatus.WITHDRAWN and row.next_attempt_at is None
    withdrawn = FederationAuditEvent.objects.for_org(org).get(event="withdrawn", message_id=remote.request_id)
    assert withdrawn.reason == "its task ended here during attempt 1 (connection reset)"
    remote.refresh_from_db()  # the mirror does not stay "requested" either
    assert remote.state == "canceled" and "while the request was being sent" in remote.error


def _result(org: Any, remote: RemoteTask, sender: str, **payload: Any) -> InboxEntry:
    """A task_result for acme's request as it lands in acme's inbox, handled."""
    import uuid

    from apps.federation.handlers import handle

    entry = InboxEntry.objects.create(
        organization=org, message_id=uuid.uuid4(), sender=sender, type=MessageType.TASK_RESULT,
        correlation_id=remote.request_id, payload=payload, receipt={},
    )  # fmt: skip
    handle(entry.pk)
    entry.refresh_from_db()
    return entry


@pytest.mark.django_db
def test_only_the_executor_reports_on_a_request(org: Any, undelivered: tuple[RemoteTask, Any]) -> None:
    remote, _task = undelivered
    # A request id is no secret (globex's members see it in their task's metadata): another org or peer that may
    # message acme must not finish acme's task for it.
    for sender in ("mallory.initech", "echo.globex@evil"):
        entry = _result(org, remote, sender, seq=0, kind="state", state="completed", data={"to": "completed"})
        assert entry.handling_error == (
            f"Unrelated: a result for request {remote.request_id} from {sender}, not from its executor"
        )
    assert _own_task(org, remote).state == "submitted" and not remote.events.exists()
    # The executor itself, under another of its agents' names (a rejection names the agent asked for), is heard.
    assert _result(org, remote, "other.globex", seq=1, kind="state", state="submitted", data={}).handling_error == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"seq": "abc", "kind": "state"}, "the result's seq must be a whole number from 0 to 2147483647, not 'abc'"),
        ({"seq": 2**63, "kind": "state"}, "the result's seq must be a whole number from 0 to 2147483647, not "),
        ({"seq": 2, "kind": "bogus_kind"}, "the result's kind must be one of state, message, artifact, progress"),
        ({"seq": 2, "kind": "state", "state": "done"}, "the result's state must be an A2A task state, not 'done'"),
        ({"seq": 0, "kind": "state", "state": "completed"}, "seq 0 is the executor's rejection; this result says"),
    ],
)
def test_a_malformed_result_is_refused_with_its_reason(
    org: Any, undelivered: tuple[RemoteTask, Any], payload: dict[str, Any], error: str
) -> None:
    remote, _task = undelivered
    entry = _result(org, remote, "echo.globex", **payload)
    assert entry.handling_error.startswith(f"Malformed: {error}")
    assert not remote.events.exists() and _own_task(org, remote).state == "submitted"


@pytest.mark.django_db
def test_a_federated_agent_row_is_no_relay(
    org: Any, other_org: Any, django_capture_on_commit_callbacks: Any
) -> None:  # fmt: skip
    # acme once asked globex's echo, so acme has a row for it; globex may send acme requests.
    actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    actions.set_policy(org=other_org, remote="*", effect=Effect.ALLOW)
    relay = agent_actions.federated_agent(org, "echo.globex")
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=other_org, agent=f"{relay.slug}.acme", message=MESSAGE)
    remote.refresh_from_db()
    assert remote.state == "rejected" and remote.error == f"acme has no agent '{relay.slug}'"
    # acme sent nothing onward under its own name.
    assert not Message.objects.for_org(org).filter(type=MessageType.TASK_REQUEST).exists()


@pytest.mark.django_db
def test_an_executor_refusal_reads_as_its_rule_not_a_class_name(
    org: Any, other_org: Any, acme_may_ask_globex: None, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.tasks import actions as task_actions

    agent_actions.register_agent_manually(org=other_org, name="Echo", url="https://agent.example.com/rpc", slug="echo")
    create = task_actions.create_task

    def executor_limit(**kwargs: Any) -> Any:
        if kwargs["org"] == other_org:  # globex's own (smaller) limit
            raise task_actions.TaskInputTooLarge(300, 200)
        return create(**kwargs)

    monkeypatch.setattr(task_actions, "create_task", executor_limit)
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    remote.refresh_from_db()
    assert remote.state == "rejected" and remote.error == str(task_actions.TaskInputTooLarge(300, 200))
    assert "TaskInputTooLarge" not in remote.error


# --- Relays from a request that named its sender agent; relays past a policy changed since ----------------------


@pytest.fixture
def globex_holds_helpers_task(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> tuple[RemoteTask, Any]:
    """As `globex_holds_the_task`, but acme's agent `helper` made the request (`sender_agent`): globex knows the
    requester as `helper.acme`."""
    from apps.agents.models import Agent
    from apps.tasks.models import Task

    Agent.objects.create(organization=other_org, name="Echo", slug="echo", url="http://127.0.0.1:9/")
    Agent.objects.create(organization=org, name="Helper", slug="helper", url="http://127.0.0.1:9/")
    monkeypatch.setattr("apps.tasks.tasks.dispatch", lambda *args, **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        remote = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE, sender_agent="helper")
    theirs = Task.objects.for_org(other_org).get()
    assert theirs.metadata["federation"]["requester"] == "helper.acme"
    return remote, theirs


def _ask_for_input(theirs: Any, capture: Any) -> None:
    from apps.tasks import actions as task_actions

    question = {"role": "agent", "parts": [{"kind": "text", "text": "Which language?"}]}
    for state, data in (("working", {}), ("input-required", {"message": question})):
        with capture(execute=True):
            task_actions.record(theirs, [task_actions.Observation(kind="state", data=data, state=state)])


@pytest.mark.django_db
def test_a_request_made_by_an_agent_can_be_canceled(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_helpers_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_helpers_task
    _cancel(client_for(alice), _own_task(org, remote), django_capture_on_commit_callbacks)
    # The cancel came from the org alone (`acme`) and globex matched `helper.acme`: it was dropped with an INFO
    # line and globex's task ran on for nobody.
    cancel = Message.objects.for_org(org).get(type=MessageType.TASK_CANCEL)
    assert cancel.sender_agent == "helper"  # sent as the request was
    theirs.refresh_from_db()
    assert theirs.state == "canceled"
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_CANCEL).handling_error == ""


@pytest.mark.django_db
def test_a_follow_up_to_a_request_made_by_an_agent_reaches_the_executor(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_helpers_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_helpers_task
    _ask_for_input(theirs, django_capture_on_commit_callbacks)
    ours = _own_task(org, remote)
    assert ours.state == "input-required"
    answer = {"role": "user", "parts": [{"kind": "text", "text": "French"}]}
    with django_capture_on_commit_callbacks(execute=True):
        replied = client_for(alice).post(f"/api/v1/tasks/{ours.pk}/messages", {"input": answer}, format="json")
    assert replied.status_code == 202, replied.content
    assert Message.objects.for_org(org).get(type=MessageType.TASK_INPUT).sender_agent == "helper"
    theirs.refresh_from_db()
    assert theirs.state == "working" and theirs.pending_message["parts"][0]["text"] == "French"


@pytest.mark.django_db
def test_the_executor_hears_a_relay_from_any_agent_of_the_requesting_org(
    org: Any, other_org: Any, globex_holds_helpers_task: tuple[RemoteTask, Any], django_capture_on_commit_callbacks: Any
) -> None:
    remote, theirs = globex_holds_helpers_task
    # What a Hermes that relays without the request's agent sends: from `acme`, not `helper.acme`.
    with django_capture_on_commit_callbacks(execute=True):
        actions.send_message(
            org=org, recipient="echo.globex", type=MessageType.TASK_CANCEL, correlation_id=remote.request_id,
            payload={"reason": "canceled by the requester"}, reply=True,
        )  # fmt: skip
    theirs.refresh_from_db()
    assert theirs.state == "canceled"


@pytest.mark.django_db
def test_a_relay_that_answers_no_request_of_its_sender_is_recorded_as_unrelated(
    org: Any, other_org: Any, globex_holds_helpers_task: tuple[RemoteTask, Any], caplog: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from tests.factories import OrganizationFactory

    remote, theirs = globex_holds_helpers_task
    # initech may message globex, and knows acme's request id (no secret): its cancel must not stop acme's task.
    initech = OrganizationFactory(slug="initech", name="Initech")
    actions.set_policy(org=other_org, remote="initech", effect=Effect.ALLOW)
    with (
        caplog.at_level("WARNING", logger="apps.federation.handlers"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        actions.send_message(
            org=initech, recipient="echo.globex", type=MessageType.TASK_CANCEL, correlation_id=remote.request_id,
            payload={}, reply=True,
        )  # fmt: skip
    theirs.refresh_from_db()
    assert theirs.state == "submitted"
    # Not an INFO line nobody reads: on the inbox entry (the inbox API and console show it) and as a warning.
    entry = InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_CANCEL)
    assert entry.handling_error == (
        f"Unrelated: a task_cancel for request {remote.request_id} from initech: no task runs here for a request "
        "of that org yet (the request is refused if it comes)"
    )
    assert [r.levelname for r in caplog.records if r.name == "apps.federation.handlers"] == ["WARNING"]


@pytest.mark.django_db
def test_the_executors_deny_rule_added_later_does_not_refuse_the_requesters_cancel(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_the_task
    # globex's admin turns acme away after accepting its request: new requests are refused, but the task already
    # running for acme must still be cancelable by acme (it was dead-lettered `403 policy_denied` and ran on).
    actions.set_policy(org=other_org, remote="acme", effect=Effect.DENY)
    _cancel(client_for(alice), _own_task(org, remote), django_capture_on_commit_callbacks)
    cancel = Message.objects.for_org(org).get(type=MessageType.TASK_CANCEL)
    assert Outbox.objects.for_org(org).get(message=cancel).status == OutboxStatus.DELIVERED
    theirs.refresh_from_db()
    assert theirs.state == "canceled"
    accepted = FederationAuditEvent.objects.for_org(other_org).get(event="accepted", message_id=cancel.id)
    assert accepted.reason == "from acme"
    # A new request from acme meets the rule.
    with django_capture_on_commit_callbacks(execute=True):
        again = actions.request_remote_task(org=org, agent="echo.globex", message=MESSAGE)
    assert Outbox.objects.for_org(org).get(message_id=again.request_id).status == OutboxStatus.DEAD


@pytest.mark.django_db
def test_the_executors_deny_rule_added_later_does_not_refuse_the_requesters_answer(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    remote, theirs = globex_holds_the_task
    _ask_for_input(theirs, django_capture_on_commit_callbacks)
    actions.set_policy(org=other_org, remote="acme", effect=Effect.DENY)
    answer = {"role": "user", "parts": [{"kind": "text", "text": "French"}]}
    with django_capture_on_commit_callbacks(execute=True):
        replied = client_for(alice).post(f"/api/v1/tasks/{remote.task_id}/messages", {"input": answer}, format="json")
    assert replied.status_code == 202, replied.content
    theirs.refresh_from_db()
    assert theirs.state == "working" and theirs.pending_message["parts"][0]["text"] == "French"


@pytest.mark.django_db
def test_a_relay_for_a_request_not_accepted_from_its_sender_meets_the_policy(
    org: Any, other_org: Any, globex_holds_the_task: tuple[RemoteTask, Any], django_capture_on_commit_callbacks: Any
) -> None:
    import uuid

    actions.set_policy(org=other_org, remote="acme", effect=Effect.DENY)
    with django_capture_on_commit_callbacks(execute=True):
        stray = actions.send_message(
            org=org, recipient="echo.globex", type=MessageType.TASK_CANCEL, correlation_id=uuid.uuid4(), payload={},
            reply=True,
        )  # fmt: skip
    row = Outbox.objects.for_org(org).get(message=stray)
    assert row.status == OutboxStatus.DEAD and "policy_denied" in row.last_error


# --- Asking a federated agent through POST /tasks needs federation:write ------------------------------------------


@pytest.mark.django_db
def test_post_tasks_to_a_federated_agent_needs_federation_write(
    org: Any, alice: Any, mia: Any, dave: Any, client_for: Any, acme_may_ask_globex: None,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.core.models import AuditEvent as CoreAuditEvent
    from apps.tasks.models import Task
    from tests.factories import issue_api_key, key_client

    agent = agent_actions.federated_agent(org, "echo.globex")
    body = {"agent": str(agent.pk), "input": MESSAGE}
    _, tasks_only = issue_api_key(alice, org, scopes=["tasks:read", "tasks:write"])
    refusals = [
        (client_for(mia), "role_forbidden"),  # a member: tasks:write, but no federation:write
        (client_for(dave), "role_forbidden"),  # a developer likewise
        (key_client(tasks_only), "missing_scope"),  # an owner's key holding only the tasks scopes
    ]
    for api, code in refusals:
        refused = api.post("/api/v1/tasks", body, format="json")
        assert refused.status_code == 403, refused.content
        error = refused.json()["error"]
        detail = "required_scope" if code == "missing_scope" else "required_action"  # as every other 403
        assert error["code"] == code and error["details"] == {detail: "federation:write"}
        assert error["message"] == (
            "Asking another org's agent, answering or canceling its task needs federation:write as well as tasks:write."
        )
    # Nothing was written: the task, its events and audit row rolled back with the request that was never sent.
    assert not Task.objects.for_org(org).exists() and not RemoteTask.objects.for_org(org).exists()
    assert not Message.objects.for_org(org).exists()
    assert not CoreAuditEvent.objects.filter(org_id=org.pk, action="task.created").exists()
    # The same words as POST /federation/remote-tasks.
    asked = {"agent": "echo.globex", "message": MESSAGE}
    remote = client_for(mia).post("/api/v1/federation/remote-tasks", asked, format="json")
    assert remote.status_code == 403 and remote.json()["error"]["message"] == error["message"]
    # An admin (federation:write) still asks through POST /tasks.
    with django_capture_on_commit_callbacks(execute=False):
        created = client_for(alice).post("/api/v1/tasks", body, format="json")
    assert created.status_code == 202, created.content
    assert RemoteTask.objects.for_org(org).get().task_id == created.json()["id"]
    # The console's Send a task form offers a federated agent only to those who may ask it.
    assert f'value="{agent.pk}"' not in client_for(mia).get("/tasks/new/").content.decode()
    assert f'value="{agent.pk}"' in client_for(alice).get("/tasks/new/").content.decode()


# --- The mirror, the request's record and the cancel after what QA saw between two instances ------------------


@pytest.mark.django_db
def test_the_mirror_says_what_was_applied_and_waits_for_missing_events(
    org: Any, alice: Any, client_for: Any, undelivered: tuple[RemoteTask, Any]
) -> None:
    remote, _task = undelivered
    for seq, kind, state, data in (
        (1, "state", "submitted", {"to": "submitted"}),
        (2, "state", "working", {"from": "submitted", "to": "working"}),
        (3, "message", "working", {"role": "agent", "parts": [{"kind": "text", "text": "on it"}]}),
        # 4 to 8 were dead-lettered on the executor's side; only the last one was requeued.
        (9, "state", "completed", {"from": "working", "to": "completed"}),
    ):
        _result(org, remote, "echo.globex", task_id="t-42", seq=seq, kind=kind, state=state, data=data)
    remote.refresh_from_db()
    assert _own_task(org, remote).state == "working"
    assert (remote.state, remote.applied_seq, remote.last_seq) == ("working", 3, 9)
    body = client_for(alice).get(f"/api/v1/federation/remote-tasks/{remote.pk}").json()
    assert body["state"] == "working" and body["waiting_for"].startswith("waiting for event 4: events up to 9")
    page = client_for(alice).get(reverse("federation:remote-task", args=[remote.pk])).content.decode()
    assert "Waiting for event 4" in page
    for seq in range(4, 9):
        _result(org, remote, "echo.globex", seq=seq, kind="progress", state="working", data={"n": seq})
    remote.refresh_from_db()
    assert (remote.state, remote.applied_seq, remote.waiting_for) == ("completed", 9, "")
    assert _own_task(org, remote).state == "completed"


@pytest.mark.django_db
def test_results_prove_a_request_delivered_though_its_receipt_was_refused(
    org: Any, undelivered: tuple[RemoteTask, Any], django_capture_on_commit_callbacks: Any
) -> None:
    from apps.federation.delivery import AttemptOutcome, AttemptResult

    remote, _task = undelivered
    row_id = Outbox.objects.for_org(org).get(message_id=remote.request_id).pk
    unsigned = AttemptResult(AttemptOutcome.RETRY, 5.0, http_status=200, error="receipt is not signed")
    with django_capture_on_commit_callbacks(execute=False):
        assert actions.finish_attempt(actions.claim_delivery(row_id), unsigned) == OutboxStatus.FAILED
    Outbox.objects.for_org(org).filter(pk=row_id).update(next_attempt_at=timezone.now())
    second = actions.claim_delivery(row_id)  # attempt 2 is in flight while the results come back
    for seq, state in ((1, "working"), (2, "completed")):
        _result(org, remote, "echo.globex", seq=seq, kind="state", state=state, data={"to": state})
    assert _own_task(org, remote).state == "completed"
    with django_capture_on_commit_callbacks(execute=False):
        assert actions.finish_attempt(second, unsigned) == OutboxStatus.DELIVERED
    row = Outbox.objects.for_org(org).get(pk=row_id)
    assert row.status == OutboxStatus.DELIVERED and row.delivered_at is not None
    assert "no receipt from the peer was accepted" in row.last_error and "receipt is not signed" in row.last_error
    events = FederationAuditEvent.objects.for_org(org).filter(message_id=remote.request_id)
    assert not events.filter(event="withdrawn").exists()
    assert "its receipt was not accepted" in events.get(event="delivered").reason


@pytest.mark.django_db
def test_the_remote_tasks_list_shows_why_a_request_is_held_up(
    org: Any, alice: Any, refused_request: tuple[RemoteTask, Any]
) -> None:
    _remote, task = refused_request
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("federation:remote-tasks")).content.decode()
    assert f"Held up by: {html.escape(task.last_error)}" in page


@pytest.mark.django_db
def test_canceling_a_request_that_never_connected_sends_no_cancel(
    org: Any, alice: Any, client_for: Any, undelivered: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from apps.federation.delivery import AttemptOutcome, AttemptResult

    remote, task = undelivered
    row_id = Outbox.objects.for_org(org).get(message_id=remote.request_id).pk
    for error in ("ConnectError: [Errno 111] Connection refused", "ConnectError: [Errno -2] Name or service not known"):
        Outbox.objects.for_org(org).filter(pk=row_id).update(next_attempt_at=timezone.now())
        refused = AttemptResult(AttemptOutcome.RETRY, 1.0, error=error)
        with django_capture_on_commit_callbacks(execute=False):
            assert actions.finish_attempt(actions.claim_delivery(row_id), refused) == OutboxStatus.FAILED
    _cancel(client_for(alice), task, django_capture_on_commit_callbacks)
    assert Outbox.objects.for_org(org).get(pk=row_id).status == OutboxStatus.WITHDRAWN
    assert not Message.objects.for_org(org).filter(type=MessageType.TASK_CANCEL).exists()
    remote.refresh_from_db()
    assert remote.state == "canceled" and remote.error == "canceled here before the request was sent"


@pytest.mark.django_db
def test_a_result_too_large_for_one_message_arrives_with_a_note_instead_of_never(
    org: Any, other_org: Any, acme_may_ask_globex: None, django_capture_on_commit_callbacks: Any
) -> None:
    # An artifact within the executor's event limit made a task_result the requester refused (413): it was
    # dead-lettered at once, and the requester's task waited for that event until its deadline.
    from types import SimpleNamespace

    from apps.federation import delivery
    from apps.federation.inbound import MAX_MESSAGE_BYTES
    from apps.federation.models import Message
    from apps.federation.remote_tasks import report_task_event

    remote, task = _globex_runs_task_77(org, other_org, django_capture_on_commit_callbacks)
    small = {"kind": "text", "text": "summary"}
    artifact = {"name": "big", "parts": [small, {"kind": "text", "text": "x" * 1_048_400}]}
    with django_capture_on_commit_callbacks(execute=True):
        report_task_event(task=task, event=SimpleNamespace(seq=1, kind="state", data={"from": None, "to": "working"}))
        report_task_event(task=task, event=SimpleNamespace(seq=2, kind="artifact", data=artifact))
        huge_state = {"from": "working", "to": "completed", "detail": "é" * 600_000}  # no parts to drop
        report_task_event(task=task, event=SimpleNamespace(seq=3, kind="state", data=huge_state))
    sent = Message.objects.for_org(other_org).filter(type=MessageType.TASK_RESULT).order_by("created_at")
    assert all(len(delivery.envelope(message)) <= MAX_MESSAGE_BYTES for message in sent)
    remote.refresh_from_db()
    assert remote.state == "completed" and remote.applied_seq == 3
    kept = remote.events.get(seq=2).data
    assert kept["parts"][0] == small and kept["parts"][1]["metadata"]["hermes_dropped_bytes"] == 1_048_425
    assert "over the 1,032,192-byte federation message limit" in kept["parts"][1]["text"]
    final = remote.events.get(seq=3).data
    assert final["to"] == "completed" and final["hermes_dropped_bytes"] > 1_000_000
    assert final["note"].startswith("[event 3 (state, ")


@pytest.mark.django_db
def test_an_answer_after_the_executor_deleted_its_agent_fails_both_tasks_with_the_reason(
    org: Any, other_org: Any, alice: Any, client_for: Any, globex_holds_the_task: tuple[RemoteTask, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    # The executor's handler failed on AgentNotUsable (a traceback, nothing sent back) and the requester's task,
    # moved to working by the answer, waited for its deadline with no error.
    remote, theirs = globex_holds_the_task
    ours = _globex_asks_a_question(org, remote, theirs, django_capture_on_commit_callbacks)
    agent_actions.delete_agent(theirs.agent)
    answer = {"role": "user", "parts": [{"kind": "text", "text": "French"}]}
    with django_capture_on_commit_callbacks(execute=True):
        replied = client_for(alice).post(f"/api/v1/tasks/{ours.pk}/messages", {"input": answer}, format="json")
    assert replied.status_code == 202, replied.content
    theirs.refresh_from_db()
    ours.refresh_from_db()
    reason = "the agent is no longer available, so it cannot take the reply"
    assert theirs.state == "failed" and reason in theirs.last_error
    assert ours.state == "failed" and reason in ours.last_error
    assert InboxEntry.objects.for_org(other_org).get(type=MessageType.TASK_INPUT).handling_error == ""
