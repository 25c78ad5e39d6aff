"""Concurrent member and invitation changes of one org: each request gets its own answer (never a 500 deadlock or
duplicate key), and the org keeps the invariants the actions guard (an owner; one open invitation per address).

Each test runs real requests in threads, each with its own database connection and transaction. To make the race
happen every run rather than now and then, a barrier holds every request at the point where the old code had taken
its first row lock and was about to take the next: with the locks taken in one order (the org row first) only one
request reaches that point at a time, so the barrier times out and each goes on in turn.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.db import connection

from apps.core.models import AuditEvent
from apps.core.permissions import Role
from apps.orgs import actions, tokens
from apps.orgs.models import Invitation, Membership
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_SECONDS = 1.0  # how long the barrier waits for the other requests before letting one go on alone


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` in threads at the same time; each result is the response's status (or the exception raised)."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=10)
            response = call()
            results[index] = (response.status_code, response.json() if response.content else None)
        except Exception as error:  # a 500: the test client re-raises the view's exception
            results[index] = error
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(index, call), name=f"request-{index}") for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _hold_before(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, parties: int, *, stagger: float = 0.0
) -> None:
    """Make `module.name` wait (at most HOLD_SECONDS) until `parties` requests have reached it. When they all
    did, request n (of `_at_once`) then goes on n * `stagger` seconds after the first, so they take the next lock
    in that order."""
    original = getattr(module, name)
    barrier = threading.Barrier(parties)

    def held(*args: Any, **kwargs: Any) -> Any:
        try:
            barrier.wait(timeout=HOLD_SECONDS)
        except threading.BrokenBarrierError:
            pass  # the others are waiting for a lock this request holds: go on alone
        else:
            time.sleep(int(threading.current_thread().name.rpartition("-")[2]) * stagger)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, held)


def _codes(results: list[Any]) -> list[Any]:
    """(status, error code) of each result, sorted; an exception (a 500) as its repr."""
    return sorted(
        (
            (result[0], (result[1] or {}).get("error", {}).get("code")) if isinstance(result, tuple) else repr(result)
            for result in results
        ),
        key=repr,
    )


@pytest.fixture
def olga(org: Any) -> Any:
    """Acme's second owner (alice is the first)."""
    user = UserFactory(email="olga@acme.test")
    MembershipFactory(organization=org, user=user, role=Role.OWNER)
    return user


def _own(org: Any, user: Any) -> Membership:
    return Membership.objects.for_org(org).get(user=user)


def test_two_owners_demoting_themselves_at_once(
    org: Any, alice: Any, olga: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each request held its own row and then waited for the other's among the owners': a deadlock, a 500.
    _hold_before(monkeypatch, actions, "_lock_owners", parties=2)
    first, second = client_for(alice), client_for(olga)
    alices, olgas = _own(org, alice), _own(org, olga)
    results = _at_once(
        [
            lambda: first.patch(f"/api/v1/members/{alices.pk}", {"role": "admin"}, format="json"),
            lambda: second.patch(f"/api/v1/members/{olgas.pk}", {"role": "admin"}, format="json"),
        ]
    )
    assert _codes(results) == [(200, None), (409, "last_owner")]
    assert Membership.objects.for_org(org).filter(role=Role.OWNER).count() == 1


def test_an_owner_leaving_while_the_other_demotes_themselves(
    org: Any, alice: Any, olga: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Leaving locked the owners' rows (alice's, then olga's), demoting held olga's own row and then asked for the
    # owners' (alice's first): a deadlock, a 500.
    _hold_before(monkeypatch, actions, "_lock_owners", parties=2, stagger=0.2)
    leave, demote = client_for(alice), client_for(olga)
    alices, olgas = _own(org, alice), _own(org, olga)
    results = _at_once(
        [
            lambda: leave.delete(f"/api/v1/members/{alices.pk}"),
            lambda: demote.patch(f"/api/v1/members/{olgas.pk}", {"role": "admin"}, format="json"),
        ]
    )
    codes = _codes(results)
    assert codes in ([(200, None), (409, "last_owner")], [(204, None), (409, "last_owner")]), codes
    assert Membership.objects.for_org(org).filter(role=Role.OWNER).count() == 1


def test_removing_someone_while_their_role_changes(
    org: Any, alice: Any, olga: Any, bob: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The removal locked the owners' rows and then bob's, the role change held bob's row and then asked for the
    # owners': a deadlock, a 500. Now one answer each, whichever runs first: the removal (204) and the role change
    # (200, or 404 once bob is gone).
    _hold_before(monkeypatch, actions, "_lock_owners", parties=2, stagger=0.2)
    bobs = _own(org, bob)
    remove, change = client_for(alice), client_for(olga)
    results = _at_once(
        [
            lambda: remove.delete(f"/api/v1/members/{bobs.pk}"),
            lambda: change.patch(f"/api/v1/members/{bobs.pk}", {"role": "member"}, format="json"),
        ]
    )
    codes = _codes(results)
    assert codes in ([(200, None), (204, None)], [(204, None), (404, "not_found")]), codes
    assert not Membership.objects.for_org(org).filter(user=bob).exists()


def test_simultaneous_invitations_of_one_address_replace_each_other(
    org: Any, alice: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch, eager_celery: None
) -> None:
    # Every request revoked the open invitation (none yet) and then inserted its own: all but one broke the
    # one-open-invitation-per-address constraint, a 500 each. Held between the two steps, they all do.
    _hold_before(monkeypatch, tokens, "new_invitation_token", parties=5)
    mail.outbox.clear()
    client = client_for(alice)
    body = {"email": "race@qa.test", "role": "member"}
    results = _at_once([lambda: client.post("/api/v1/invitations", body, format="json") for _ in range(5)])
    assert _codes(results) == [(201, None)] * 5
    invitations = Invitation.objects.for_org(org).filter(email="race@qa.test")
    assert invitations.count() == 5
    pending = [invitation for invitation in invitations if invitation.state() == "pending"]
    assert len(pending) == 1
    # Each request replaced the one before it, and says so in the audit log.
    replaced = AuditEvent.objects.filter(org_id=org.pk, action="invitation.revoked")
    assert replaced.count() == 4
    assert {event.details["reason"] for event in replaced} == {actions.REPLACED_BY_NEW_INVITATION}
    # One email per invitation, each sent once its invitation was committed (its token names a stored one).
    assert len(mail.outbox) == 5
    sent = {match.group(1) for message in mail.outbox if (match := re.search(r"/invitations/([\w-]+)/", message.body))}
    assert {tokens.digest(token) for token in sent} == {invitation.digest for invitation in invitations}


def test_deleting_an_org_while_a_worker_records_on_its_task_waits_for_it_instead_of_deadlocking(
    org: Any, alice: Any
) -> None:
    """A worker holds its task's row while it records an event, and the event's insert needs a key-share lock on
    the org's row. Deleting the org took the org's row first and then met the task's: a deadlock, one of the two
    aborted (a 500 for the person deleting the org)."""
    from django.db import transaction

    from apps.agents.models import Agent
    from apps.tasks import actions as task_actions
    from apps.tasks.models import Task, TaskEvent
    from tests.factories import access_for

    agent = Agent.objects.create(organization=org, slug="echo", name="Echo", url="https://agent.example.com/")
    task = task_actions.create_task(org=org, agent=agent, message={"parts": [{"kind": "text", "text": "hi"}]})
    locked, outcome = threading.Event(), {}

    def worker() -> None:
        try:
            with transaction.atomic():
                Task.objects.for_org(org).select_for_update().get(pk=task.pk)  # as execution's record() does
                locked.set()
                time.sleep(HOLD_SECONDS)  # the deletion starts meanwhile
                TaskEvent.objects.create(organization=org, task=task, seq=task.last_seq + 1, kind="progress", data={})
                Task.objects.for_org(org).filter(pk=task.pk).update(last_seq=task.last_seq + 1)
            outcome["worker"] = "recorded"
        except Exception as error:
            outcome["worker"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=worker, name="worker")
    thread.start()
    assert locked.wait(timeout=10)
    actions.delete_organization(access=access_for(alice, org))  # raised OperationalError (deadlock) before
    thread.join(timeout=30)
    assert outcome["worker"] == "recorded"
    assert not Task.objects.unscoped("the org is gone, with its tasks").filter(pk=task.pk).exists()
