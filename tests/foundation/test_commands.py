"""Hermes' management commands on a database that is not ready: one line that says what to do, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from psycopg import sql

from apps.ops.backup import Database, drop_database
from apps.ops.tests.conftest import database_url
from hermes_site.config import BASE_DIR


def _manage(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERMES_ENV": "test", "DATABASE_URL": database}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: no table at all, as before the first `manage.py migrate`."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    if connection.vendor != "postgresql":
        pytest.skip("the tests run on SQLite")
    # The test database's own name as the prefix: a name of this run's, dropped afterwards.
    url = database_url().rsplit("/", 1)[0] + f"/{connection.settings_dict['NAME']}_unmigrated_{uuid.uuid4().hex[:8]}"
    target = Database.from_url(url)
    with target.connect(dbname="postgres") as conn:
        conn.autocommit = True
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.name)))
    try:
        yield url
    finally:
        drop_database(target)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "table"),
    [
        (["seed_demo"], "accounts_user"),
        (["federation_peer", "list"], "federation_peer"),
        (["federation_dlq", "list"], "federation_outbox"),
    ],
)
def test_an_unmigrated_database_is_one_line(unmigrated_database: str, command: list[str], table: str) -> None:
    result = _manage(unmigrated_database, *command)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: The database has ") and table in line, line
    assert line.endswith("run `python manage.py migrate` first.")


def test_migrate_on_an_unreachable_database_is_one_line() -> None:
    result = _manage("postgres://postgres@127.0.0.1:9/hermes", "migrate", "--noinput")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: The database is unreachable (") and "Connection refused" in line, line


def test_health_on_a_sqlite_file_that_does_not_exist_creates_none(tmp_path: Path) -> None:
    # Connecting created an empty file, so a read-only check wrote to disk (and the next one found a database).
    missing = tmp_path / "nope.sqlite3"
    result = _manage(f"sqlite:///{missing}", "health")
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert f"no SQLite database at {missing}: `python manage.py migrate` creates it" in result.stdout + result.stderr
    assert not missing.exists()
