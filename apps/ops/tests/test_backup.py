from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from apps.ops.backup import (
    BackupError,
    Database,
    backup,
    drop_database,
    ensure_database,
    load_manifest,
    restore,
    sha256_file,
    verify,
)
from apps.ops.tests.conftest import database_url
from tests.factories import issue_api_key


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """The URL of a database that does not exist yet (hermes_ops_* is ours to create); dropped afterwards."""
    url = database_url().rsplit("/", 1)[0] + f"/hermes_ops_restore_{uuid.uuid4().hex[:10]}"
    yield url
    drop_database(Database.from_url(url))


def _latest(directory: Path, suffix: str) -> Path:
    return max(directory.glob(f"*{suffix}"), key=lambda p: p.stat().st_mtime)


@pytest.mark.django_db(transaction=True)
def test_backup_then_restore_into_a_new_database_verifies(
    tmp_path: Path, scratch_database: str, org: Any, alice: Any, charlie: Any
) -> None:
    issue_api_key(alice, org, ["tasks:read"])
    out = io.StringIO()
    call_command("backup", output_dir=str(tmp_path), stdout=out)
    dump = _latest(tmp_path, ".dump")
    manifest = json.loads(_latest(tmp_path, ".manifest.json").read_text())
    assert manifest["dump"]["sha256"] and manifest["vendor"] == "postgresql"
    tables = manifest["tables"]
    assert tables["accounts_user"]["rows"] == 2 and tables["orgs_organization"]["rows"] == 2
    assert tables["orgs_membership"]["rows"] == 2 and tables["orgs_apikey"]["rows"] == 1
    assert {"agents_agent", "django_migrations"} <= set(tables)
    assert len(manifest["schema"]) > 100 and "accounts_user" in out.getvalue()
    # One column of row counts, however long a table's name (federation_federationauditevent pushed its row out).
    rows = [line for line in out.getvalue().splitlines() if line.endswith(" rows") or " rows  " in line]
    assert len(rows) == len(tables) and len({line.index(" rows") for line in rows}) == 1, rows

    out = io.StringIO()
    call_command("restore", str(dump), target_url=scratch_database, stdout=out)
    text = out.getvalue()
    assert "schema      identical" in text and "verified:" in text
    assert re.search(r"^orgs_apikey +ok ", text, re.M)

    # Restoring over it again is refused (no longer fresh) unless forced.
    with pytest.raises(CommandError, match="already has tables"):
        call_command("restore", str(dump), target_url=scratch_database, stdout=io.StringIO())

    # A restored database that drifted from the backup is caught by --verify-only.
    target = Database.from_url(scratch_database)
    with target.connect() as conn:
        conn.execute("UPDATE accounts_user SET email = 'mallory@evil.test' WHERE email = 'alice@acme.test'")
        conn.execute("ALTER TABLE orgs_organization ADD COLUMN extra integer")
    out = io.StringIO()
    with pytest.raises(CommandError, match="does NOT match"):
        call_command("restore", str(dump), target_url=scratch_database, verify_only=True, stdout=out)
    assert re.search(r"^accounts_user +MISMATCH ", out.getvalue(), re.M)
    assert "schema      DIFFERENT" in out.getvalue() and "+ column orgs_organization.extra" in out.getvalue()

    out = io.StringIO()
    call_command("restore", str(dump), target_url=scratch_database, force=True, stdout=out)
    assert "verified:" in out.getvalue()


@pytest.mark.django_db
def test_restore_refuses_damaged_files_production_and_missing_manifests(tmp_path: Path) -> None:
    dump = tmp_path / "hermes-x.dump"
    dump.write_bytes(b"not a dump")
    with pytest.raises(CommandError, match="No manifest"):
        call_command("restore", str(dump), stdout=io.StringIO())
    with pytest.raises(CommandError, match="No such backup file"):
        call_command("restore", str(tmp_path / "missing.dump"), stdout=io.StringIO())
    (tmp_path / "hermes-x.manifest.json").write_text(
        json.dumps({"format": "hermes-backup/1", "dump": {"sha256": "0" * 64}})
    )
    with pytest.raises(CommandError, match="does not match its manifest"):
        call_command("restore", str(dump), stdout=io.StringIO())
    (tmp_path / "hermes-x.manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CommandError, match="is not a hermes-backup/1 or hermes-backup/2 manifest"):
        call_command("restore", str(dump), stdout=io.StringIO())
    with override_settings(HERMES_ENV="production"), pytest.raises(CommandError, match="force-production"):
        call_command("restore", str(dump), stdout=io.StringIO())
    # A verification only reads: production does not refuse it (it goes on to the manifest, as anywhere).
    with override_settings(HERMES_ENV="production"), pytest.raises(CommandError, match="is not a hermes-backup"):
        call_command("restore", str(dump), "--verify-only", stdout=io.StringIO())
    # A manifest of the right format and checksum but the wrong shape is refused before anything is restored.
    sha = hashlib.sha256(dump.read_bytes()).hexdigest()
    (tmp_path / "hermes-x.manifest.json").write_text(
        json.dumps({"format": "hermes-backup/2", "dump": {"sha256": sha}, "vendor": "sqlite", "tables": "all"})
    )
    with pytest.raises(CommandError, match="'tables' must be an object of table name to its recorded contents"):
        call_command("restore", str(dump), stdout=io.StringIO())


def test_a_restore_that_cannot_work_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    """--force empties the target: whatever would make the restore fail is found out before that."""
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    manifest = load_manifest(result.dump)
    live = _sqlite_source(tmp_path / "live.sqlite3")
    result.dump.write_bytes(b"not a database at all" * 100)  # damaged after its manifest was checked
    with pytest.raises(BackupError, match="cannot be restored: file is not a database"):
        restore(result.dump, live, manifest, force=True)
    with sqlite3.connect(live.name) as conn:
        assert conn.execute("SELECT count(*) FROM accounts_user").fetchone() == (250,)
    # Damaged inside, with a manifest that matches it (so the checksum cannot tell): the whole file is checked.
    result = backup(source, tmp_path / "backups2", label="hermes-test")
    data = bytearray(result.dump.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 4000):
        data[offset] ^= 0xFF
    result.dump.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="cannot be restored"):
        restore(result.dump, live, manifest, force=True)
    with sqlite3.connect(live.name) as conn:
        assert conn.execute("SELECT count(*) FROM accounts_user").fetchone() == (250,)
    pg_dump = tmp_path / "hermes-pg.dump"
    pg_dump.write_bytes(b"PGDMP but not really")
    target = Database(vendor="postgresql", name="hermes_ops_never_created")
    with pytest.raises(BackupError, match="pg_restore failed"):
        restore(pg_dump, target, {**manifest, "vendor": "postgresql"}, force=True)


def _sqlite_source(path: Path) -> Database:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts_user (id INTEGER PRIMARY KEY, email TEXT NOT NULL, joined TEXT)")
        conn.execute("CREATE UNIQUE INDEX accounts_user_email ON accounts_user (email)")
        conn.executemany(
            "INSERT INTO accounts_user (email, joined) VALUES (?, ?)",
            [(f"user{i}@hermes.test", "2026-11-26") for i in range(250)],
        )
        conn.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('accounts', '0001_initial', 'now')")
    return Database(vendor="sqlite", name=str(path))


def test_sqlite_online_backup_and_verified_restore(tmp_path: Path) -> None:
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    assert result.dump.name == "hermes-test.sqlite3" and result.manifest_path.name == "hermes-test.manifest.json"
    assert result.manifest["tables"]["accounts_user"]["rows"] == 250
    assert "online backup" in result.manifest["dump"]["tool"]
    manifest = load_manifest(result.dump)

    target = Database(vendor="sqlite", name=str(tmp_path / "restored" / "hermes.sqlite3"))
    verification = restore(result.dump, target, manifest)
    assert verification.ok and verification.schema_equal
    assert Path(target.name).stat().st_mode & 0o777 == 0o600  # as private as the dump it came from
    nowhere = Database(vendor="sqlite", name=str(tmp_path / "no-such.sqlite3"))
    with pytest.raises(
        BackupError, match=re.escape(f"There is no database at sqlite:{nowhere.name}: nothing to verify")
    ):
        verify(nowhere, manifest)
    assert not Path(nowhere.name).exists()  # verifying created an empty file, then listed every table missing
    with pytest.raises(BackupError, match="already has tables"):
        restore(result.dump, target, manifest)
    with sqlite3.connect(target.name) as conn:
        conn.execute("DELETE FROM accounts_user WHERE id = 7")
    drifted = verify(target, manifest)
    assert not drifted.ok and drifted.schema_equal
    assert drifted.tables["accounts_user"]["actual"]["rows"] == 249
    assert restore(result.dump, target, manifest, force=True).ok

    postgres_target = Database(vendor="postgresql", name="hermes_ops_never_created")
    with pytest.raises(BackupError, match="This is a sqlite backup"):
        restore(result.dump, postgres_target, manifest)


def test_unreachable_places_are_named_not_tracebacks(tmp_path: Path) -> None:
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(BackupError, match=re.escape(f"Cannot create the output directory {blocker}/backups")):
        backup(source, blocker / "backups")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    manifest = load_manifest(result.dump)
    with pytest.raises(BackupError, match="Cannot create the directory of sqlite:"):
        restore(result.dump, Database(vendor="sqlite", name=str(blocker / "db.sqlite3")), manifest)
    nowhere = Database.from_url("postgres://postgres@127.0.0.1:1/hermes_restore")
    with pytest.raises(BackupError, match=re.escape("Cannot connect to postgresql://127.0.0.1:1/hermes_restore: ")):
        verify(nowhere, manifest)
    with pytest.raises(CommandError, match=re.escape("Cannot connect to postgresql://127.0.0.1:1/")):
        call_command(
            "restore",
            str(result.dump),
            "--verify-only",
            "--target-url",
            "postgres://127.0.0.1:1/x",
            stdout=io.StringIO(),
        )


def test_unsupported_engines_are_refused() -> None:
    with pytest.raises(BackupError, match="Unsupported database engine"):
        Database.from_url("mysql://u:p@localhost/db")


def test_mistakes_that_would_lose_or_fake_a_backup_are_refused(tmp_path: Path) -> None:
    # A mistyped SQLite path: the plain connect created an empty file there and "backed it up" (exit 0).
    typo = Database(vendor="sqlite", name=str(tmp_path / "typo.sqlite3"))
    with pytest.raises(BackupError, match=r"Cannot open sqlite:.*typo\.sqlite3.*does the file exist"):
        backup(typo, tmp_path / "backups")
    assert not (tmp_path / "typo.sqlite3").exists() and not list((tmp_path / "backups").glob("*.sqlite3"))
    # A database without Hermes' tables (the wrong one, or not migrated yet).
    sqlite3.connect(tmp_path / "empty.sqlite3").close()
    with pytest.raises(BackupError, match=r"has no Hermes tables .* Nothing was written"):
        backup(Database(vendor="sqlite", name=str(tmp_path / "empty.sqlite3")), tmp_path / "backups")
    assert not list((tmp_path / "backups").glob("*.sqlite3"))
    with pytest.raises(CommandError, match=r"No database alias 'nope' in DATABASES \(there is: default"):
        call_command("backup", "--database", "nope", stdout=io.StringIO())

    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    manifest = load_manifest(result.dump)
    # Restoring a backup "into" itself with --force emptied the file first: the backup was gone.
    with pytest.raises(BackupError, match="is the backup file itself"):
        restore(result.dump, Database(vendor="sqlite", name=str(result.dump)), manifest, force=True)
    assert sha256_file(result.dump) == manifest["dump"]["sha256"]
    # A file that is no SQLite database (its manifest made to match): a clear error, no empty target left.
    fake = tmp_path / "fake.sqlite3"
    fake.write_bytes(b"x" * 4096)
    target = tmp_path / "restored.sqlite3"
    with pytest.raises(BackupError, match="cannot be restored: file is not a database"):
        restore(fake, Database(vendor="sqlite", name=str(target)), {**manifest, "dump": {"sha256": sha256_file(fake)}})
    assert not target.exists()
    # Manifests that are no manifests.
    for text, reason in (
        ("{not json", "cannot be read as JSON"),
        ("[]", "is not a hermes-backup/1 or hermes-backup/2 manifest"),
    ):
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(CommandError, match=re.escape(reason)):
            call_command("restore", str(result.dump), "--manifest", str(tmp_path / "m.json"), stdout=io.StringIO())
    with pytest.raises(CommandError, match=r"No manifest at .*missing\.json: check the path"):
        call_command("restore", str(result.dump), "--manifest", str(tmp_path / "missing.json"), stdout=io.StringIO())


def _federation_rows(org: Any) -> None:
    """A link with a key, an undelivered message with its attempt log: what an instance cannot lose silently."""
    from django.utils import timezone

    from apps.federation.models import DeliveryAttempt, LinkKey, Message, Outbox, Peer

    peer = Peer.objects.create(name="bravo", base_url="http://127.0.0.1:9", local_name="alpha")
    LinkKey.objects.create(peer=peer, version=1, state="current", secret_encrypted="gAAAA-test", fingerprint="bcd0")
    message = Message.objects.create(organization=org, recipient="demo@bravo", peer=peer, payload={"v": 1})
    outbox = Outbox.objects.create(organization=org, message=message, status="failed", queued_at=timezone.now())
    DeliveryAttempt.objects.create(organization=org, outbox=outbox, number=1, duration_ms=2.0, outcome="retry")


def _mismatched(out: str) -> set[str]:
    return {line.split()[0] for line in out.splitlines() if " MISMATCH " in line}


@pytest.mark.django_db(transaction=True)
def test_verify_only_catches_lost_federation_rows_and_changed_states(
    tmp_path: Path, scratch_database: str, org: Any
) -> None:
    from django.db import connection

    _federation_rows(org)
    call_command("backup", output_dir=str(tmp_path), stdout=io.StringIO())
    dump = _latest(tmp_path, ".dump")
    manifest = json.loads(_latest(tmp_path, ".manifest.json").read_text())
    tables = manifest["tables"]
    assert manifest["format"] == "hermes-backup/2"
    # Every table is checked at least by its row count; link keys in full; the outbox by key and state.
    assert set(tables) == set(connection.introspection.table_names())
    assert tables["federation_linkkey"]["check"] == "full" and tables["federation_linkkey"]["rows"] == 1
    assert tables["federation_outbox"]["check"] == "state" and tables["federation_outbox"]["rows"] == 1
    assert tables["federation_outbox"]["columns"] == ["id", "message_id", "status", "attempts"]
    assert tables["federation_deliveryattempt"] == {"check": "rows", "rows": 1}
    assert tables["tasks_task"]["check"] == "state" and tables["federation_inboxentry"]["check"] == "state"

    out = io.StringIO()
    call_command("restore", str(dump), target_url=scratch_database, stdout=out)
    assert "verified:" in out.getvalue() and f"schema and all {len(tables)} tables" in out.getvalue()
    assert not _mismatched(out.getvalue())

    # Same row count, another state: only the state digest can tell.
    target = Database.from_url(scratch_database)
    with target.connect() as conn:
        conn.execute("UPDATE federation_outbox SET status = 'delivered'")
    out = io.StringIO()
    with pytest.raises(CommandError, match="does NOT match"):
        call_command("restore", str(dump), target_url=scratch_database, verify_only=True, stdout=out)
    assert _mismatched(out.getvalue()) == {"federation_outbox"}

    # QA's reproduction (F6): these deletions were reported as "matches the backup".
    with target.connect() as conn:
        conn.execute("DELETE FROM federation_deliveryattempt; DELETE FROM federation_outbox")
        conn.execute("DELETE FROM federation_linkkey")
    out = io.StringIO()
    with pytest.raises(CommandError, match="does NOT match"):
        call_command("restore", str(dump), target_url=scratch_database, verify_only=True, stdout=out)
    assert _mismatched(out.getvalue()) == {"federation_deliveryattempt", "federation_outbox", "federation_linkkey"}
    assert re.search(r"^federation_deliveryattempt +MISMATCH rows 0 \(expected 1; row count\)$", out.getvalue(), re.M)
    # pg_dump wrote into a file created private: it kept the mode.
    assert dump.stat().st_mode & 0o777 == 0o600


def _sqlite_with_state_tables(path: Path) -> Database:
    source = _sqlite_source(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE federation_outbox (id INTEGER PRIMARY KEY, message_id TEXT, status TEXT, attempts INTEGER,"
            " last_error TEXT)"
        )
        conn.executemany(
            "INSERT INTO federation_outbox (message_id, status, attempts, last_error) VALUES (?, ?, ?, ?)",
            [(str(uuid.uuid4()), "pending", 0, None) for _ in range(300)],
        )
        conn.execute("CREATE TABLE scratch_log (line TEXT)")  # no model, no primary key: counted
        conn.executemany("INSERT INTO scratch_log VALUES (?)", [("x",), ("y",)])
    return source


def test_sqlite_state_digests_and_row_counts_are_verified(tmp_path: Path) -> None:
    source = _sqlite_with_state_tables(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    tables = result.manifest["tables"]
    assert tables["federation_outbox"]["check"] == "state" and tables["federation_outbox"]["rows"] == 300
    assert tables["scratch_log"] == {"check": "rows", "rows": 2}
    manifest = load_manifest(result.dump)
    target = Database(vendor="sqlite", name=str(tmp_path / "restored.sqlite3"))
    assert restore(result.dump, target, manifest).ok

    with sqlite3.connect(target.name) as conn:  # a column that is no state: not digested
        conn.execute("UPDATE federation_outbox SET last_error = 'x' WHERE id = 1")
    assert verify(target, manifest).ok
    for change, table in (
        ("UPDATE federation_outbox SET status = 'dead' WHERE id = 2", "federation_outbox"),
        ("DELETE FROM scratch_log WHERE line = 'y'", "scratch_log"),
    ):
        with sqlite3.connect(target.name) as conn:
            conn.execute(change)
        drifted = verify(target, manifest)
        assert not drifted.ok and not drifted.tables[table]["equal"]


def test_a_version_1_manifest_still_verifies(tmp_path: Path) -> None:
    source = _sqlite_with_state_tables(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    # What hermes-backup/1 wrote: full digests of the critical tables only, no check descriptions.
    tables = result.manifest["tables"]
    v1 = {
        **{k: v for k, v in result.manifest.items() if k != "session_timezone"},
        "format": "hermes-backup/1",
        "tables": {
            t: {"rows": tables[t]["rows"], "digest": tables[t]["digest"]}
            for t in ("accounts_user", "django_migrations")
        },
    }
    result.manifest_path.write_text(json.dumps(v1))
    target = tmp_path / "restored.sqlite3"
    out = io.StringIO()
    call_command("restore", str(result.dump), "--target-url", f"sqlite:///{target}", stdout=out)
    assert re.search(r"^accounts_user +ok +rows 250 \(expected 250; every row\)$", out.getvalue(), re.M)
    assert "schema and the 2 tables a hermes-backup/1 manifest records" in out.getvalue()


def test_backups_are_private_files_in_a_private_directory(tmp_path: Path) -> None:
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    previous = os.umask(0o022)  # the usual umask, under which the files came out -rw-r--r--
    try:
        result = backup(source, tmp_path / "new" / "backups", label="hermes-test")
        assert (tmp_path / "new" / "backups").stat().st_mode & 0o777 == 0o700
        assert result.dump.stat().st_mode & 0o777 == 0o600
        assert result.manifest_path.stat().st_mode & 0o777 == 0o600
        assert result.warnings == []
        # A directory the operator made is not changed, but a world-accessible one is pointed out.
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        result = backup(source, shared, label="hermes-test")
        assert shared.stat().st_mode & 0o777 == 0o755 and result.dump.stat().st_mode & 0o777 == 0o600
        (warning,) = result.warnings
        assert "accessible to other users (mode 755)" in warning and "chmod 700" in warning
    finally:
        os.umask(previous)


@pytest.mark.django_db
def test_wrong_paths_are_named_for_what_they_are(tmp_path: Path) -> None:
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    result = backup(source, tmp_path / "backups", label="hermes-test")
    with pytest.raises(CommandError, match=re.escape(f"{tmp_path} is a directory: pass the .dump (or .sqlite3) file")):
        call_command("restore", str(tmp_path), stdout=io.StringIO())
    with pytest.raises(
        CommandError, match=re.escape(f"{result.manifest_path} is a manifest: pass the backup it describes")
    ):
        call_command("restore", str(result.manifest_path), stdout=io.StringIO())
    with pytest.raises(CommandError, match=re.escape(f"The output directory {result.dump} is a file")):
        call_command("backup", "--output-dir", str(result.dump), stdout=io.StringIO())


def test_a_dead_database_is_one_line(tmp_path: Path) -> None:
    result = backup(_sqlite_source(tmp_path / "hermes.sqlite3"), tmp_path / "backups", label="hermes-test")
    manifest = load_manifest(result.dump)
    with pytest.raises(BackupError) as refused:
        verify(Database.from_url("postgres://postgres@127.0.0.1:1/hermes_restore"), manifest)
    assert "\n" not in str(refused.value) and "Connection refused" in str(refused.value)
    with pytest.raises(BackupError) as failed:
        backup(Database.from_url("postgres://postgres@127.0.0.1:1/hermes"), tmp_path / "pg")
    assert "\n" not in str(failed.value)
    assert not (tmp_path / "pg").exists()  # it wrote nothing: not even the directory it would have written to
    (tmp_path / "mine").mkdir()  # a directory the operator made stays
    with pytest.raises(BackupError):
        backup(Database.from_url("postgres://postgres@127.0.0.1:1/hermes"), tmp_path / "mine" / "a" / "b")
    assert list(tmp_path.joinpath("mine").iterdir()) == []
    with pytest.raises(BackupError) as unreachable:
        ensure_database(Database.from_url("postgres://postgres@127.0.0.1:1/hermes_target"))
    assert str(unreachable.value).startswith(
        "Cannot connect to postgresql://127.0.0.1:1/hermes_target (through the server's 'postgres' database): "
    )


def test_a_sqlite_target_that_cannot_be_opened_is_named_not_the_backup(tmp_path: Path) -> None:
    """ "cannot be restored: unable to open database file (is it a SQLite backup?)" blamed the backup."""
    result = backup(_sqlite_source(tmp_path / "hermes.sqlite3"), tmp_path / "backups", label="hermes-test")
    target = Database.from_url("sqlite:////proc/hermes-restore.sqlite3")
    with pytest.raises(BackupError) as refused:
        restore(result.dump, target, load_manifest(result.dump))
    assert str(refused.value).startswith("Cannot open sqlite:/proc/hermes-restore.sqlite3: "), refused.value
    assert str(result.dump) not in str(refused.value)


@pytest.mark.django_db
def test_a_pg_restore_that_crashes_on_a_damaged_dump_says_so(tmp_path: Path) -> None:
    """pg_restore segfaults on some damaged archives and prints nothing: "pg_restore failed (exit -11): " was all
    the restore said."""
    database = Database.from_url(database_url())
    if database.vendor != "postgresql":
        pytest.skip("a Postgres dump needs the tests on Postgres")
    result = backup(database, tmp_path, label="hermes-test")
    manifest = load_manifest(result.dump)
    data = bytearray(result.dump.read_bytes())
    data[7] = 0xFF  # the archive format's revision byte, read as a layout that is not there
    result.dump.write_bytes(bytes(data))
    crashed = subprocess.run(["pg_restore", "--file", os.devnull, str(result.dump)], capture_output=True, check=False)
    if crashed.returncode >= 0:
        pytest.skip(f"this pg_restore reads the damage without crashing (exit {crashed.returncode})")
    with pytest.raises(BackupError) as refused:
        restore(result.dump, Database(vendor="postgresql", name="hermes_ops_never_created"), manifest, force=True)
    signame = signal.Signals(-crashed.returncode).name
    assert str(refused.value) == f"pg_restore crashed ({signame}) reading the archive: the dump is damaged."


def test_a_tool_that_fails_without_a_word_is_said_to() -> None:
    from apps.ops.backup import _run

    with pytest.raises(BackupError) as failed:
        _run([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    assert str(failed.value).endswith("failed (exit 3): it printed no error message")
