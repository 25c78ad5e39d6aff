"""Tasks in the Django admin: read-only, deletes included. A task changes only through apps.tasks.actions, which
record its timeline; a task deleted here left no audit row and its outgoing federation request's outbox row
failing on every retry."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.tasks.models import Task, TaskEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", ["task", "taskevent"])
def test_tasks_and_their_events_cannot_be_deleted_in_the_admin(staff: Client, task: Any, model: str) -> None:
    event = TaskEvent.objects.unscoped("test").filter(task=task).order_by("seq").first()
    assert event is not None
    pk = task.pk if model == "task" else event.pk
    base = f"/admin/tasks/{model}/"
    assert staff.get(f"{base}{pk}/change/").status_code == 200  # still readable
    assert "delete_selected" not in staff.get(base).content.decode()  # no bulk delete offered
    assert staff.get(f"{base}add/").status_code == 403
    assert staff.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [str(pk)], "post": "yes"}
    staff.post(base, bulk)
    assert Task.objects.unscoped("test").filter(pk=task.pk).exists()
    assert TaskEvent.objects.unscoped("test").filter(pk=event.pk).exists()
    assert staff.post(f"{base}{pk}/change/", {"state": "failed"}).status_code == 403
