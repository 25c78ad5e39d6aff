"""insert_together: rows of several models in one statement, all or none."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from apps.core import audit
from apps.core.db import insert_together
from apps.tasks.models import EventKind, Task, TaskEvent
from tests.tasks.conftest import make_agent


def _rows(org: Any, seqs: tuple[int, ...] = (1, 2)) -> tuple[Task, list[TaskEvent], Any]:
    task = Task(organization=org, agent=make_agent(org, "echo"), input={"parts": []}, last_seq=max(seqs))
    events = [TaskEvent(organization=org, task=task, seq=seq, kind=EventKind.PROGRESS, data={"n": seq}) for seq in seqs]
    return task, events, audit.entry("task.created", org=org, target=task)


@pytest.mark.django_db
def test_rows_of_three_models_are_one_statement_and_read_back_as_saved(org: Any) -> None:
    task, events, entry = _rows(org)
    with CaptureQueriesContext(connection) as queries:
        insert_together(task, *events, entry)
    assert len(queries) == 1 and queries[0]["sql"].startswith("WITH ")
    stored = Task.objects.unscoped("test").get(pk=task.pk)
    assert stored.input == {"parts": []} and stored.last_seq == 2 and stored.created_at == task.created_at
    assert [(e.seq, e.data) for e in stored.events.order_by("seq")] == [(1, {"n": 1}), (2, {"n": 2})]
    assert audit.events_for_org(org).get(action="task.created").target_id == str(task.pk)
    # The instances are saved ones now: a later save() updates the row instead of inserting it again.
    assert not task._state.adding
    task.last_error = "later"
    task.save(update_fields=["last_error"])
    assert Task.objects.unscoped("test").get(pk=task.pk).last_error == "later"


@pytest.mark.django_db(transaction=True)
def test_one_bad_row_writes_nothing_even_outside_a_transaction(org: Any) -> None:
    # Two events with the same seq break the (task, seq) constraint: the task row, inserted by the same statement
    # in autocommit, must not stay behind.
    task, events, entry = _rows(org, seqs=(1, 1))
    with pytest.raises(IntegrityError):
        insert_together(task, *events, entry)
    assert not Task.objects.unscoped("test").filter(pk=task.pk).exists()
    assert not audit.events_for_org(org).exists()


@pytest.mark.django_db
def test_refuses_a_mix_of_given_and_generated_keys(org: Any) -> None:
    task, events, _entry = _rows(org)
    events[0].pk = 10**9
    with pytest.raises(ValueError, match="mixed given and generated primary keys"):
        insert_together(task, *events)
