"""A request that fails because the database is unreachable answers 503 `database_unavailable`, not a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError
from django.test import Client

from apps.agents import selectors as agent_selectors
from apps.core import checks
from apps.tasks.api import TaskViewSet

pytestmark = pytest.mark.django_db


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError('connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused')


@pytest.fixture
def database_down(monkeypatch: Any) -> None:
    # What the API and console views read first fails as it does when Postgres is gone, and so does a new
    # connection (the middleware's check, which runs for real in the last test).
    monkeypatch.setattr(TaskViewSet, "list", _refuse)
    monkeypatch.setattr(agent_selectors, "org_agents", _refuse)
    monkeypatch.setattr(checks, "database_reachable", lambda: False)


def test_api_answers_503_with_the_reason_and_retry_after(client_for: Any, alice: Any, database_down: None) -> None:
    response = client_for(alice).get("/api/v1/tasks")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "database_unavailable" and "nothing was read or changed" in error["message"]


def test_console_answers_a_503_page(client: Client, alice: Any, database_down: None, monkeypatch: Any) -> None:
    client.force_login(alice)
    # The first thing a signed-in page reads is the session, in a middleware (not in the view) — where an error
    # skips every process_exception: this was a 500 with a traceback per page during an outage.
    monkeypatch.setattr(SessionStore, "load", _refuse)
    response = client.get("/tasks/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "Temporarily unavailable" in response.content.decode()
    assert client.get("/tasks/", headers={"HX-Request": "true"})["X-Hermes-Error"]  # htmx shows it as a toast


def test_an_operational_error_of_a_reachable_database_stays_a_500(
    client_for: Any, alice: Any, monkeypatch: Any
) -> None:
    # A deadlock or a statement timeout is a real error, not an outage: the database answers a fresh connection.
    def deadlock(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("deadlock detected")

    monkeypatch.setattr(TaskViewSet, "list", deadlock)
    client = client_for(alice)
    client.raise_request_exception = False
    assert client.get("/api/v1/tasks").status_code == 500
    assert checks.database_reachable()


def test_an_operator_command_says_the_database_is_unreachable(monkeypatch: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from apps.federation.models import Outbox

    monkeypatch.setattr(Outbox, "objects", _Refusing())  # what the command reads first fails as without Postgres
    monkeypatch.setattr(checks, "database_reachable", lambda: False)
    with pytest.raises(CommandError, match=r"The database is unreachable \(connection to server .*nothing was changed"):
        call_command("federation_dlq", "list")
    monkeypatch.setattr(checks, "database_reachable", lambda: True)  # the database's own answer: raised as it is
    with pytest.raises(OperationalError):
        call_command("federation_dlq", "list")


class _Refusing:
    """A manager every method of which fails like a connection to a database that is gone."""

    def __getattr__(self, name: str) -> Any:
        return _refuse


def test_a_job_that_finds_the_database_gone_logs_one_line_and_is_ignored(
    monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from apps.tasks import tasks as jobs
    from apps.tasks.models import Task

    monkeypatch.setattr(Task, "objects", _Refusing())  # the sweeper's first read fails as without Postgres
    monkeypatch.setattr(checks, "database_reachable", lambda: False)
    with caplog.at_level("WARNING"):
        result = jobs.sweep_tasks.apply()
    assert result.state == "IGNORED"  # not FAILURE: no traceback per beat while the database is down
    (record,) = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage().startswith("job apps.tasks.tasks.sweep_tasks[")
    assert 'skipped: the database is unreachable (connection to server at "db"' in record.getMessage()

    monkeypatch.setattr(checks, "database_reachable", lambda: True)  # the database's own answer still fails the job
    with pytest.raises(OperationalError):
        jobs.sweep_tasks.apply()
