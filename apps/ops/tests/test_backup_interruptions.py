"""A backup or restore that is cut short leaves nothing that looks like a backup, and says so in one line: a full
disk while the manifest is written, SIGTERM/SIGINT while pg_dump runs, a second restore into the same target. And
`flush`, like `migrate`, says an unreachable database in one line."""

from __future__ import annotations

import errno
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.ops import backup as backup_module
from apps.ops.backup import BackupError, Database, backup, drop_database, load_manifest, restore
from apps.ops.tests.conftest import child_env, database_url, wait_for
from hermes_site.config import BASE_DIR


def _sqlite_source(path: Path) -> Database:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts_user (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
        conn.executemany("INSERT INTO accounts_user (email) VALUES (?)", [(f"u{i}@hermes.test",) for i in range(50)])
        conn.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('accounts', '0001_initial', 'now')")
    return Database(vendor="sqlite", name=str(path))


def _no_space(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- A full disk while the manifest is written (QA ops #4) ------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "mkstemp"])
def test_a_manifest_that_cannot_be_written_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The disk filled after the dump: the dump stayed next to a truncated manifest, with a traceback."""
    source = _sqlite_source(tmp_path / "hermes.sqlite3")
    directory = tmp_path / "new" / "backups"
    # fsync: the text went into the file and the disk said no (as a write does, or a close on NFS); mkstemp: not
    # even an empty file could be created.
    if failing == "fsync":
        monkeypatch.setattr(backup_module.os, "fsync", _no_space)
    else:
        monkeypatch.setattr(backup_module.tempfile, "mkstemp", _no_space)
    with pytest.raises(BackupError) as failed:
        backup(source, directory, label="hermes-test")
    assert str(failed.value) == f"Cannot write {directory}/hermes-test.manifest.json: No space left on device."
    assert not (tmp_path / "new").exists()  # dump, manifest, its temporary file and the directories: all gone


@pytest.mark.django_db
def test_backup_command_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module.os, "fsync", _no_space)
    (tmp_path / "backups").mkdir()
    with pytest.raises(CommandError, match=r"^Cannot write .*\.manifest\.json: No space left on device\.$"):
        call_command("backup", output_dir=str(tmp_path / "backups"), stdout=io.StringIO())
    assert list((tmp_path / "backups").iterdir()) == []  # an existing directory stays, empty


def test_the_manifest_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    result = backup(_sqlite_source(tmp_path / "hermes.sqlite3"), tmp_path / "backups", label="hermes-test")
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [
        "hermes-test.manifest.json",
        "hermes-test.sqlite3",
    ]  # no temporary file left behind
    assert result.manifest_path.stat().st_mode & 0o777 == 0o600
    assert load_manifest(result.dump)["tables"]["accounts_user"]["rows"] == 50


# --- SIGTERM / SIGINT during pg_dump (QA ops #5) ----------------------------------------------------------------

# Stands in for pg_dump and pg_restore: it writes part of the dump (pg_dump), says where it is, and then takes its
# time, as a big database does.
_SLOW_TOOL = """\
import os, sys, time
if "--version" in sys.argv:
    print("pg_dump (PostgreSQL) 99 (slow stand-in)")
    raise SystemExit(0)
target = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--file=")), None)
if target:
    with open(target, "wb") as dump:
        dump.write(b"PGDMP partial")
with open(os.environ["SLOW_TOOL_PID"], "w") as pid:
    pid.write(str(os.getpid()))
time.sleep(60)
if target:
    with open(target, "ab") as dump:
        dump.write(b" and the rest, long after the backup ended")
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an orphan that exited stays a zombie until its new parent reaps it


@pytest.fixture
def slow_tools(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """An environment whose pg_dump and pg_restore are the slow stand-in, and the file it writes its pid to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{_SLOW_TOOL}")
        (bin_dir / name).chmod(0o755)
    pid_file = tmp_path / "tool.pid"
    env = child_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLOW_TOOL_PID=str(pid_file))
    yield env, pid_file
    if pid_file.exists() and _alive(pid := int(pid_file.read_text())):
        os.kill(pid, signal.SIGKILL)  # only when the test failed: this is the orphan it is about


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; pg_dump dies with us on Linux only")
@pytest.mark.django_db
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_backup_stops_pg_dump_and_leaves_nothing(
    tmp_path: Path, slow_tools: tuple[dict[str, str], Path], signum: signal.Signals
) -> None:
    """`timeout`, systemd and a CronJob deadline send SIGTERM: pg_dump went on under init and wrote a .dump that
    no manifest describes, minutes after the command had gone."""
    env, pid_file = slow_tools
    output = tmp_path / "backups"
    command = subprocess.Popen(
        [sys.executable, "manage.py", "backup", "--output-dir", str(output)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
        pg_dump = int(pid_file.read_text())
        assert list(output.glob("*.dump")), "the stand-in is writing its dump"
        command.send_signal(signum)
        _, stderr = command.communicate(timeout=15)
    finally:
        if command.poll() is None:  # pragma: no cover - only when the test fails
            command.kill()
            command.wait()
    assert command.returncode == 128 + signum, stderr
    assert stderr.splitlines() == [
        f"CommandError: Backup stopped by {signum.name}: pg_dump (if running) was stopped and the partial backup "
        "removed; nothing was written."
    ]
    assert not _alive(pg_dump)
    assert not output.exists()  # the partial dump, and the directory the backup had created for it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.django_db
def test_pg_dump_dies_with_a_backup_that_is_killed(tmp_path: Path, slow_tools: tuple[dict[str, str], Path]) -> None:
    """SIGKILL (a CronJob past its grace period) runs no cleanup at all, but pg_dump still does not outlive it."""
    env, pid_file = slow_tools
    command = subprocess.Popen(
        [sys.executable, "manage.py", "backup", "--output-dir", str(tmp_path / "backups")],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    pg_dump = int(pid_file.read_text())
    command.kill()
    command.wait()
    wait_for(lambda: not _alive(pg_dump), timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.django_db
def test_a_stopped_restore_stops_pg_restore_and_says_so(
    tmp_path: Path, slow_tools: tuple[dict[str, str], Path], scratch_database: str
) -> None:
    source = Database.from_url(database_url())
    if source.vendor != "postgresql":
        pytest.skip("a Postgres restore needs the tests on Postgres")
    result = backup(source, tmp_path / "backups", label="hermes-test")  # the real pg_dump: not in slow_tools' env
    env, pid_file = slow_tools
    command = subprocess.Popen(
        [sys.executable, "manage.py", "restore", str(result.dump), "--target-url", scratch_database],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
        pg_restore = int(pid_file.read_text())
        command.send_signal(signal.SIGTERM)
        _, stderr = command.communicate(timeout=15)
    finally:
        if command.poll() is None:  # pragma: no cover - only when the test fails
            command.kill()
            command.wait()
    assert command.returncode == 143, stderr
    target = Database.from_url(scratch_database).describe()
    assert stderr.splitlines() == [
        f"CommandError: Restore stopped by SIGTERM: if it had begun filling {target}, that database is incomplete; "
        "restore again (with --force) before using it."
    ]
    assert not _alive(pg_restore)


def test_the_signal_handlers_are_put_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with backup_module.stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) not in before
        with pytest.raises(backup_module.Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
    assert stopped.value.exit_code == 143
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# --- Two restores into one target (QA ops #8) -------------------------------------------------------------------


@pytest.fixture
def scratch_database() -> Iterator[str]:
    url = database_url().rsplit("/", 1)[0] + f"/hermes_ops_restore_{uuid.uuid4().hex[:10]}"
    yield url
    drop_database(Database.from_url(url))


@pytest.mark.django_db
def test_a_second_restore_into_the_same_postgres_database_is_refused(tmp_path: Path, scratch_database: str) -> None:
    """Both ran: the loser printed pg_restore's "relation already exists", and with --force each dropped the schema
    the other was filling."""
    source = Database.from_url(database_url())
    if source.vendor != "postgresql":
        pytest.skip("a Postgres restore needs the tests on Postgres")
    result = backup(source, tmp_path, label="hermes-test")
    target = Database.from_url(scratch_database)
    call_command("restore", str(result.dump), target_url=scratch_database, stdout=io.StringIO())
    with backup_module._restore_lock(target):  # what the first restore holds while it runs
        for force in (False, True):
            out = io.StringIO()
            with pytest.raises(CommandError) as refused:
                call_command(
                    "restore", str(result.dump), target_url=scratch_database, force=force, stdout=io.StringIO()
                )
            assert str(refused.value) == (
                f"Another restore into {target.describe()} is running (pid {os.getpid()} on {os.uname().nodename}): "
                "wait for it to finish (or stop it) and try again. Nothing was changed."
            )
        with target.connect() as conn:  # --force did not drop the schema under the running restore
            assert conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 0
    out = io.StringIO()
    call_command("restore", str(result.dump), target_url=scratch_database, force=True, stdout=out)
    assert "verified:" in out.getvalue()  # the lock went with the first restore's connection


def test_a_second_restore_into_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    result = backup(_sqlite_source(tmp_path / "hermes.sqlite3"), tmp_path / "backups", label="hermes-test")
    manifest = load_manifest(result.dump)
    target = Database(vendor="sqlite", name=str(tmp_path / "restored" / "hermes.sqlite3"))
    with backup_module._restore_lock(target):
        with pytest.raises(BackupError, match=r"^Another restore into sqlite:.* is running \(pid \d+ on "):
            restore(result.dump, target, manifest, force=True)
        assert not Path(target.name).exists()
    assert restore(result.dump, target, manifest).ok
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["hermes.sqlite3"]  # no lock file left


# --- flush with the database down (QA ops #10) ------------------------------------------------------------------


def test_flush_says_an_unreachable_database_in_one_line() -> None:
    env = child_env(DATABASE_URL="postgres://postgres@127.0.0.1:1/hermes")
    done = subprocess.run(
        [sys.executable, "manage.py", "flush", "--noinput"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("CommandError: The database is unreachable (") and "nothing was changed" in line
