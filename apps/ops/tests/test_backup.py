from __future__ import annotations

import io
import json
import re
import sqlite3
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

    out = io.StringIO()
    call_command("restore", str(dump), target_url=scratch_database, stdout=out)
    text = out.getvalue()
    assert "schema      identical" in text and "verified:" in text
    assert "orgs_apikey                  ok" in text

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
    assert "accounts_user                MISMATCH" in out.getvalue()
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
    with pytest.raises(CommandError, match="is not a hermes-backup/1 manifest"):
        call_command("restore", str(dump), stdout=io.StringIO())
    with override_settings(HERMES_ENV="production"), pytest.raises(CommandError, match="force-production"):
        call_command("restore", str(dump), stdout=io.StringIO())


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
    for text, reason in (("{not json", "cannot be read as JSON"), ("[]", "is not a hermes-backup/1 manifest")):
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(CommandError, match=re.escape(reason)):
            call_command("restore", str(result.dump), "--manifest", str(tmp_path / "m.json"), stdout=io.StringIO())
    with pytest.raises(CommandError, match=r"No manifest at .*missing\.json: check the path"):
        call_command("restore", str(result.dump), "--manifest", str(tmp_path / "missing.json"), stdout=io.StringIO())
