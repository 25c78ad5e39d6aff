"""Where backups come from and restores go: the URL's libpq options (sslmode...) reach every connection, psycopg's
and pg_dump's/pg_restore's, and a target that cannot hold a restore is refused in one line."""

from __future__ import annotations

import io
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from psycopg.conninfo import conninfo_to_dict

from apps.ops import backup as backup_module
from apps.ops.backup import BackupError, Database, backup, ensure_database
from apps.ops.tests.conftest import database_url

TLS_OPTIONS = "sslmode=verify-full&sslrootcert=/etc/hermes/ca.pem&sslcert=/etc/hermes/c.pem&sslkey=/etc/hermes/c.key"


def test_url_options_reach_the_tools_environment_and_their_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "disable")  # the URL is what the application connects with: it wins
    database = Database.from_url(f"postgres://hermes:s3cret@db.example:5433/hermes?{TLS_OPTIONS}&keepalives=1")
    env = database.libpq_env()
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/etc/hermes/ca.pem"
    assert env["PGSSLCERT"] == "/etc/hermes/c.pem" and env["PGSSLKEY"] == "/etc/hermes/c.key"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGPASSWORD"]) == (
        "db.example",
        "5433",
        "hermes",
        "s3cret",
    )
    # What no environment variable carries goes on the command line, with the database name; never a secret.
    arg = database.dbname_arg()
    assert arg.startswith("--dbname=") and conninfo_to_dict(arg.removeprefix("--dbname=")) == {
        "dbname": "hermes",
        "keepalives": "1",
    }
    assert "s3cret" not in repr(database)
    with pytest.raises(BackupError, match="sslpassword cannot be passed"):
        Database.from_url("postgres://db.example/hermes?sslpassword=pass").dbname_arg()


def test_settings_options_are_libpq_keywords_only() -> None:
    """DATABASES OPTIONS hold Django's and psycopg's own keys too (the pool, the isolation level)."""
    database = Database._from_config(
        {
            "ENGINE": "django_prometheus.db.backends.postgresql",
            "NAME": "hermes",
            "OPTIONS": {"sslmode": "require", "connect_timeout": 3, "pool": {"max_size": 4}, "isolation_level": 1},
        }
    )
    assert dict(database.options) == {"sslmode": "require", "connect_timeout": "3"}
    assert database.libpq_env()["PGCONNECT_TIMEOUT"] == "3"
    sqlite = Database._from_config({"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "OPTIONS": {"timeout": 20}})
    assert dict(sqlite.options) == {}


def test_direct_connections_carry_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    seen: list[str] = []

    def fake_connect(conninfo: str, **kwargs: Any) -> Any:
        seen.append(conninfo)
        raise psycopg.OperationalError("stop here")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    database = Database.from_url(f"postgres://hermes@db.example/hermes?{TLS_OPTIONS}&connect_timeout=2")
    for dbname in (None, "postgres"):  # the restore target and the maintenance database ensure_database uses
        with pytest.raises(BackupError, match="stop here"):
            database.connect(dbname)
    for conninfo, dbname in zip(seen, ("hermes", "postgres"), strict=True):
        params = conninfo_to_dict(conninfo)
        assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/etc/hermes/ca.pem"
        assert params["dbname"] == dbname and params["connect_timeout"] == "2"


@pytest.mark.django_db
def test_sslmode_require_is_enforced_against_a_server_without_tls(tmp_path: Path) -> None:
    """The test server has ssl=off: the application refuses it with sslmode=require, and so must backup, restore
    and pg_dump (they used to succeed over the unencrypted connection)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres")
    with connection.cursor() as cursor:
        cursor.execute("SHOW ssl")
        if cursor.fetchone()[0] == "on":
            pytest.skip("the test server accepts TLS")
    strict_url = database_url() + "?sslmode=require"
    plain, strict = Database.from_url(database_url()), Database.from_url(strict_url)
    pg_dump = backup_module._tool("pg_dump")
    schema_only = [pg_dump, "--schema-only", "--file=/dev/null"]
    backup_module._run([*schema_only, plain.dbname_arg()], plain.libpq_env())  # the same command works without it
    with pytest.raises(BackupError, match="SSL"):
        backup_module._run([*schema_only, strict.dbname_arg()], strict.libpq_env())
    with pytest.raises(BackupError, match="SSL"):
        backup(strict, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing that looks like a backup
    dump, _ = _sqlite_backup(tmp_path)
    with pytest.raises(CommandError, match="SSL"):
        call_command("restore", str(dump), verify_only=True, target_url=strict_url, stdout=io.StringIO())


def _sqlite_backup(tmp_path: Path) -> tuple[Path, Database]:
    source = tmp_path / "source.sqlite3"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('accounts', '0001_initial', 'now')")
    database = Database(vendor="sqlite", name=str(source))
    result = backup(database, tmp_path / "backups", label="hermes-test")
    return result.dump, database


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("postgres://postgres@127.0.0.1:5432/", "names no database"),
        ("postgres://postgres:pw@127.0.0.1:5432", "names no database"),
        ("sqlite://", "is an in-memory SQLite database"),
        ("sqlite:///", "is an in-memory SQLite database"),
        ("sqlite://:memory:", "is an in-memory SQLite database"),
        ("nonsense", "is not a database URL"),
        ("postgres://127.0.0.1:99999/hermes", "is not a database URL"),
    ],
)
def test_a_target_that_cannot_hold_a_restore_is_one_line(tmp_path: Path, url: str, refusal: str) -> None:
    """`CREATE DATABASE ""` and FileNotFoundError ':memory:' were tracebacks."""
    dump, _ = _sqlite_backup(tmp_path)
    for verify_only in (False, True):
        with pytest.raises(CommandError, match=refusal) as refused:
            call_command("restore", str(dump), target_url=url, verify_only=verify_only, stdout=io.StringIO())
        assert "\n" not in str(refused.value) and ":pw@" not in str(refused.value)


@pytest.fixture
def role_without_createdb() -> Iterator[str]:
    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres")
    role = f"hermes_ops_nocreatedb_{uuid.uuid4().hex[:8]}"
    # Its own autocommit connection: a role made inside the test's transaction is invisible to a new login.
    admin = Database.from_url(database_url())
    with admin.connect() as conn:
        conn.autocommit = True
        conn.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    yield role
    with admin.connect() as conn:
        conn.autocommit = True
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.django_db
def test_a_role_that_may_not_create_the_target_is_one_line(role_without_createdb: str) -> None:
    """CREATE DATABASE refused for the role was a psycopg traceback out of `manage.py restore`."""
    server = database_url().rsplit("/", 1)[0].split("@", 1)[1]
    target = Database.from_url(f"postgres://{role_without_createdb}@{server}/hermes_ops_never_{uuid.uuid4().hex[:8]}")
    try:
        with target.connect("postgres"):
            pass
    except BackupError as exc:  # the server wants a password from this new role: nothing to show here
        pytest.skip(f"the test server does not let a new role in: {exc}")
    with pytest.raises(BackupError, match="permission denied to create database") as refused:
        ensure_database(target)
    assert "\n" not in str(refused.value) and "CREATEDB" in str(refused.value)
