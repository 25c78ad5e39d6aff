"""Backups that prove themselves: a dump plus a manifest that a restore is verified against.

The manifest records the dump's checksum, a normalized schema (and its fingerprint) and a check per table: the row
count of every table; for the tables that are small and must come back exactly (users, orgs, memberships, API keys,
agents, federation peers, link keys and policies, the migration history) a digest of every row; for the large ones
the service runs on (tasks, federation messages, outbox, inbox, remote tasks) a digest of the primary keys and
state columns computed inside the database, so a big table is never shipped to Python. On Postgres the manifest
is computed inside the same snapshot pg_dump reads (`pg_export_snapshot()` + `pg_dump --snapshot`), so writes that
land during the backup cannot make a correct restore look wrong. On SQLite (the embedded default) the online backup
API copies the file and the manifest is computed on the copy.

A restore goes into a fresh database (created when missing), refuses one that already has tables unless forced,
and then recomputes schema and digests on the restored database and compares them with the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import environ
from django.apps import apps
from django.conf import settings
from django.db import connections

from apps.core.checks import error_line
from apps.core.logging import redact
from hermes_site.embedded import die_with_parent

# /2 added a check for every table (see TableCheck); /1 manifests (six fully digested tables) still verify.
MANIFEST_FORMAT = "hermes-backup/2"
READABLE_FORMATS = ("hermes-backup/1", MANIFEST_FORMAT)
_FORMATS_TEXT = " or ".join(READABLE_FORMATS)
MANIFEST_SUFFIX = ".manifest.json"
# Small tables an operator must get back exactly: every row is digested. Whichever of these models exist are checked.
CRITICAL_MODELS = (
    "accounts.User",
    "orgs.Organization",
    "orgs.Membership",
    "orgs.APIKey",
    "agents.Agent",
    "federation.Peer",
    "federation.LinkKey",  # without them no peer can be talked to
    "federation.Policy",
)
# Tables that grow with traffic but whose state is the service: the primary key plus these fields are digested in
# SQL (a restore that lost undelivered messages, inbox dedup rows or task states fails verification).
STATE_MODELS: dict[str, tuple[str, ...]] = {
    "tasks.Task": ("state", "last_seq"),
    "federation.Message": ("type",),
    "federation.Outbox": ("message", "status", "attempts"),
    "federation.InboxEntry": ("peer", "message_id", "handled_at"),
    "federation.RemoteTask": ("state", "last_seq"),
    "federation.FederatedTask": ("task_id",),
}
# Digests of timestamps are computed in this session time zone on both sides (Postgres prints timestamptz in the
# session's zone, which can differ between the backed-up server and the restore target).
_SESSION_TIMEZONE = "UTC"
_CHUNK = 2000


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why and what to do."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived during a backup or restore (`stop_on_signals`). A BaseException, as
    KeyboardInterrupt is: no `except Exception` on the way out swallows it, and every cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signal.value  # what a shell reports for a process this signal ended


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM (timeout, systemd, a Kubernetes CronJob deadline) and SIGINT into `Interrupted` for the time of
    the block. Python's default for SIGTERM is to die on the spot: no cleanup ran, and pg_dump was left writing a
    .dump with no manifest. Outside the main thread no handler can be set, and the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired = False

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal fired
        if not fired:  # once: a second Ctrl-C (or SIGTERM) must not cut short the cleanup the first one started
            fired = True
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# The libpq keywords a DATABASE_URL query (`?sslmode=require`) or DATABASES OPTIONS can carry, and the environment
# variable pg_dump/pg_restore read each from (libpq "Environment Variables"). The application connects with all of
# them, so a backup or a restore must too: without them `sslmode=require` was quietly a plaintext connection.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# OPTIONS keys that Django or psycopg consume themselves; they are no libpq keywords.
_NOT_LIBPQ = frozenset(
    {
        "assume_role",
        "isolation_level",
        "pool",
        "server_side_binding",
        "autocommit",
        "prepare_threshold",
        "context",
        "row_factory",
        "cursor_factory",
    }
)
# A libpq keyword with no environment variable would have to go on pg_dump's command line, which every local user
# can read (`ps`): a secret among them is refused rather than shown there.
_SECRET_KEYWORDS = frozenset({"sslpassword"})
_CONNECT_TIMEOUT = "5"


@dataclass(frozen=True)
class Database:
    """Where a backup comes from or a restore goes: Postgres connection parameters or a SQLite file.

    `options` are the libpq keywords of the URL's query or of DATABASES OPTIONS (sslmode, sslrootcert, ...): every
    connection to the database, psycopg's and pg_dump's or pg_restore's, is made with them."""

    vendor: str  # "postgresql" or "sqlite"
    name: str
    host: str = ""
    port: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    options: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False, compare=False)

    @classmethod
    def from_settings(cls, alias: str = "default") -> Database:
        return cls._from_config(connections[alias].settings_dict)

    @classmethod
    def from_url(cls, url: str) -> Database:
        """A restore target (`--target-url`): refused in one line unless it names a database that can hold one."""
        try:
            with warnings.catch_warnings():  # "Engine not recognized": the refusal below says it in its own line
                warnings.simplefilter("ignore")
                config = environ.Env.db_url_config(url)
        except ValueError as exc:  # a port past 65535
            raise BackupError(f"--target-url {redact(url)} is not a database URL: {exc}.") from exc
        if "ENGINE" not in config:
            raise BackupError(
                f"--target-url {redact(url)} is not a database URL: use postgres://user@host:5432/name "
                "or sqlite:////absolute/path.sqlite3."
            )
        database = cls._from_config(config)
        if database.vendor == "sqlite" and database.name in ("", ":memory:"):
            raise BackupError(
                f"--target-url {url} is an in-memory SQLite database, gone when the restore ends: name a file "
                "(sqlite:////absolute/path.sqlite3)."
            )
        if database.vendor == "postgresql" and not database.name:
            raise BackupError(
                f"--target-url {redact(url)} names no database: add its name "
                "(postgres://user@host:5432/hermes_restore; it is created if missing)."
            )
        return database

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Database:
        engine = str(config["ENGINE"])
        vendor = "sqlite" if engine.endswith("sqlite3") else "postgresql" if "postgresql" in engine else engine
        if vendor not in {"sqlite", "postgresql"}:
            raise BackupError(f"Unsupported database engine {engine}: backups cover Postgres and SQLite.")
        options = config.get("OPTIONS") or {}
        return cls(
            vendor=vendor,
            name=str(config["NAME"]),
            host=str(config.get("HOST") or ""),
            port=str(config.get("PORT") or ""),
            user=str(config.get("USER") or ""),
            password=str(config.get("PASSWORD") or ""),
            # SQLite's OPTIONS (timeout, init_command) are Django's, not the file's.
            options={
                str(key): str(value)
                for key, value in options.items()
                if vendor == "postgresql" and key not in _NOT_LIBPQ and value is not None
            },
        )

    def describe(self, dbname: str | None = None) -> str:
        if self.vendor == "sqlite":
            return f"sqlite:{self.name}"
        return f"postgresql://{self.host or 'localhost'}:{self.port or 5432}/{dbname or self.name}"

    def libpq_env(self, dbname: str | None = None) -> dict[str, str]:
        """Connection parameters for pg_dump/pg_restore as environment: the password never shows in `ps`.
        Options libpq reads from no environment variable go in `dbname_arg()`."""
        env = dict(os.environ)
        env["PGCONNECT_TIMEOUT"] = _CONNECT_TIMEOUT
        # Set from the options even where the process environment has the variable: the URL is what the app uses.
        env.update({LIBPQ_ENV[key]: value for key, value in self.options.items() if key in LIBPQ_ENV})
        env["PGDATABASE"] = dbname or self.name
        for key, value in (("PGHOST", self.host), ("PGPORT", self.port), ("PGUSER", self.user)):
            if value:
                env[key] = value
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def dbname_arg(self, dbname: str | None = None) -> str:
        """pg_dump/pg_restore's `--dbname`: a connection string with the database and the options no environment
        variable can carry (keepalives, tcp_user_timeout, ...); libpq takes the rest from `libpq_env()`."""
        from psycopg.conninfo import make_conninfo

        rest = {key: value for key, value in self.options.items() if key not in LIBPQ_ENV and key != "dbname"}
        if secret := sorted(_SECRET_KEYWORDS & set(rest)):
            raise BackupError(
                f"The database option {', '.join(secret)} cannot be passed to pg_dump/pg_restore without showing "
                "in the process list: remove it (use a key file without a passphrase, readable only by this user)."
            )
        return "--dbname=" + make_conninfo(dbname=dbname or self.name, **rest)

    def connect(self, dbname: str | None = None) -> Any:
        if self.vendor == "sqlite":
            try:
                return sqlite3.connect(self.name)
            except sqlite3.OperationalError as exc:
                raise BackupError(f"Cannot open {self.describe()}: {exc}") from exc
        import psycopg
        from psycopg.conninfo import make_conninfo

        params = {
            "connect_timeout": _CONNECT_TIMEOUT,
            **self.options,
            "dbname": dbname or self.name,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        try:
            return psycopg.connect(make_conninfo(**{k: v for k, v in params.items() if v}))
        except psycopg.OperationalError as exc:
            # The target is what the operator named: a connection to the server's maintenance database (to
            # create the target) that fails names the target, with the database it went through.
            through = f" (through the server's {dbname!r} database)" if dbname and dbname != self.name else ""
            raise BackupError(f"Cannot connect to {self.describe()}{through}: {error_line(exc)}") from exc


# --- What a manifest records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableCheck:
    """How one table is compared between a backup and a restore. It is recorded in the manifest with its result,
    so a restore is checked the way its backup was made, whatever this code's model list says today."""

    kind: str  # "full": every row; "state": key + state columns, digested in SQL; "rows": the count only
    key: str = ""  # primary-key column (orders a "full" digest)
    columns: tuple[str, ...] = ()  # "state": the key first, then the state columns

    @classmethod
    def from_manifest(cls, table: str, entry: dict[str, Any]) -> TableCheck:
        if "check" not in entry:  # a hermes-backup/1 entry: a full digest of a critical table
            return cls("full", _full_digest_keys().get(table, "id"))
        return cls(str(entry["check"]), str(entry.get("key", "")), tuple(entry.get("columns", ())))

    def describe(self) -> dict[str, Any]:
        if self.kind == "full":
            return {"check": "full", "key": self.key}
        if self.kind == "state":
            return {"check": "state", "columns": list(self.columns)}
        return {"check": "rows"}


CHECK_LABELS = {"full": "every row", "state": "key and state digest", "rows": "row count"}


def _models(labels: Any) -> list[Any]:
    found = []
    for label in labels:
        try:
            found.append(apps.get_model(label))
        except LookupError:
            continue
    return found


def _full_digest_keys() -> dict[str, str]:
    """table -> primary-key column of the fully digested tables, the migration log included."""
    keys = {model._meta.db_table: model._meta.pk.column for model in _models(CRITICAL_MODELS)}
    return {**keys, "django_migrations": "id"}


def planned_checks(columns: dict[str, list[str]]) -> dict[str, TableCheck]:
    """The check of every table of a database being backed up (`columns`: table -> its columns)."""
    plan = {table: TableCheck("rows") for table in columns}
    for model in _models(STATE_MODELS):
        table = model._meta.db_table
        wanted = [model._meta.pk.column] + [model._meta.get_field(f).column for f in STATE_MODELS[model._meta.label]]
        if table in columns:  # only columns that exist: a model may be ahead of unapplied migrations
            plan[table] = TableCheck("state", columns=tuple(c for c in wanted if c in columns[table]))
    for table, key in _full_digest_keys().items():
        if table in columns:
            plan[table] = TableCheck("full", key)
    return plan


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def table_summary(cursor: Any, table: str, pk: str) -> dict[str, Any]:
    """Row count and a SHA-256 over every row (ordered by primary key, columns by name)."""
    cursor.execute(f"SELECT * FROM {_quote(table)} ORDER BY {_quote(pk)}")  # noqa: S608 - names from Django models
    columns = [c[0] for c in cursor.description]
    order = sorted(range(len(columns)), key=lambda i: columns[i])
    digest = hashlib.sha256(json.dumps([columns[i] for i in order]).encode())
    rows = 0
    while batch := cursor.fetchmany(_CHUNK):
        for row in batch:
            digest.update(json.dumps([_canonical(row[i]) for i in order], default=str, sort_keys=True).encode())
            digest.update(b"\n")
            rows += 1
    return {"rows": rows, "digest": digest.hexdigest()}


def _row_hash(text: str) -> int:
    """60 bits of a row's MD5: what Postgres computes with `('x' || substr(md5(t), 1, 15))::bit(60)::bigint`."""
    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:15], 16)


class _RowHashSum:
    """SQLite has no md5(): the same aggregate as Postgres' sum of `_row_hash`, registered on the connection."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, text: str) -> None:
        self.total += _row_hash(text)

    def finalize(self) -> str:
        return str(self.total)


def state_summary(cursor: Any, vendor: str, table: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """Row count and an order-independent digest (the sum of each row's hash) of `columns`, computed by the
    database in one pass and constant memory: fit for tables far too big to read into Python."""
    if vendor == "postgresql":
        # quote_nullable: NULL and the text 'NULL' (or '') stay distinct, and a comma inside a value cannot shift
        # a column boundary.
        row = "concat_ws(',', " + ", ".join(f"quote_nullable({_quote(c)}::text)" for c in columns) + ")"
        aggregate = f"coalesce(sum(('x' || substr(md5({row}), 1, 15))::bit(60)::bigint), 0)::text"
    else:
        row = " || ',' || ".join(f"quote({_quote(c)})" for c in columns)
        aggregate = f"coalesce(hermes_row_hash_sum({row}), '0')"
    cursor.execute(f"SELECT count(*), {aggregate} FROM {_quote(table)}")  # noqa: S608 - quoted identifiers
    rows, digest = cursor.fetchone()
    return {"rows": rows, "digest": str(digest)}


def count_summary(cursor: Any, table: str) -> dict[str, Any]:
    cursor.execute(f"SELECT count(*) FROM {_quote(table)}")  # noqa: S608 - quoted identifier
    return {"rows": cursor.fetchone()[0]}


def summarize(cursor: Any, vendor: str, table: str, check: TableCheck) -> dict[str, Any]:
    if check.kind == "full":
        summary = table_summary(cursor, table, check.key)
    elif check.kind == "state":
        summary = state_summary(cursor, vendor, table, check.columns)
    else:
        summary = count_summary(cursor, table)
    return {**check.describe(), **summary}


_PG_SCHEMA_QUERIES = (
    # Columns: type, nullability, default and identity, per table.
    """SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
              || coalesce('(' || character_maximum_length || ')', '') || ' null=' || is_nullable
              || ' default=' || coalesce(column_default, '') || ' identity=' || is_identity
       FROM information_schema.columns WHERE table_schema = 'public'""",
    # Constraints (primary keys, foreign keys, unique, check) by definition.
    """SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
       FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    """SELECT 'index ' || tablename || ' ' || indexname || ' ' || indexdef FROM pg_indexes
       WHERE schemaname = 'public'""",
    """SELECT 'sequence ' || sequence_name || ' ' || data_type FROM information_schema.sequences
       WHERE sequence_schema = 'public'""",
)


_CAST = re.compile(r"::(\"[^\"]+\"|[a-z_]+(?: [a-z_]+)*)(\(\d+(,\d+)?\))?(\[\])?")


def _normalize_pg(line: str) -> str:
    """Postgres re-deparses expressions it restores (a partial index's `= ANY (ARRAY[...])` comes back with its
    casts moved), so definitions are compared without type casts and grouping parentheses."""
    return re.sub(r"\s*([\[\],])\s*", r"\1", re.sub(r"[()]", " ", _CAST.sub("", line)))


def schema_lines(connection: Any, vendor: str) -> list[str]:
    """The schema as sorted, whitespace-normalized lines: equal for a source and its faithful restore."""
    cursor = connection.cursor()
    lines: list[str] = []
    if vendor == "postgresql":
        for query in _PG_SCHEMA_QUERIES:
            cursor.execute(query)
            lines += [_normalize_pg(row[0]) for row in cursor.fetchall()]
    else:
        cursor.execute(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
        lines += [" ".join(str(part) for part in row) for row in cursor.fetchall()]
    return sorted(re.sub(r"\s+", " ", line).strip() for line in lines)


def fingerprint(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def describe_contents(
    connection: Any, vendor: str, checks: dict[str, TableCheck] | None = None, *, timezone: str | None = None
) -> dict[str, Any]:
    """Schema and table checks of a database: `checks` from a manifest when verifying, else planned for every
    table. A table that is missing, or lacks a column its check reads, has no entry."""
    lines = schema_lines(connection, vendor)
    columns = _table_columns(connection, vendor)
    cursor = connection.cursor()
    if vendor == "postgresql" and timezone:
        # Bound, not interpolated: the value comes from the manifest, a file that may have been edited.
        cursor.execute("SELECT set_config('TimeZone', %s, false)", [timezone])
    elif vendor == "sqlite":
        connection.create_aggregate("hermes_row_hash_sum", 1, _RowHashSum)
    plan = planned_checks(columns) if checks is None else checks
    tables = {
        table: summarize(cursor, vendor, table, check)
        for table, check in plan.items()
        if table in columns and set(check.columns) <= set(columns[table]) and check.key in {"", *columns[table]}
    }
    return {"schema_fingerprint": fingerprint(lines), "schema": lines, "tables": tables}


def _table_columns(connection: Any, vendor: str) -> dict[str, list[str]]:
    cursor = connection.cursor()
    found: dict[str, list[str]] = {}
    if vendor == "postgresql":
        cursor.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN pg_tables t "
            "ON t.tablename = c.table_name AND t.schemaname = c.table_schema WHERE c.table_schema = 'public' "
            "ORDER BY c.table_name, c.ordinal_position"
        )
        for table, column in cursor.fetchall():
            found.setdefault(table, []).append(column)
        return found
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    for (table,) in cursor.fetchall():
        cursor.execute("SELECT name FROM pragma_table_info(?)", [table])
        found[table] = [row[0] for row in cursor.fetchall()]
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client (apt-get install postgresql-client), "
            "matching or newer than the server's major version."
        )
    return found


def _run(command: list[str], env: dict[str, str]) -> None:
    # The tool dies with this process, however it dies (PR_SET_PDEATHSIG on Linux): a backup killed by SIGKILL left
    # pg_dump running under init, writing a .dump that no manifest describes.
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(os.getpid()),  # only prctl runs in the child, after fork
    ) as process:
        try:
            _, stderr = process.communicate(timeout=3600)
        except BaseException:
            # Interrupted (SIGTERM/SIGINT raise Interrupted, see stop_on_signals) or timed out: the tool is
            # stopped and waited for before the caller removes its partial file, so nothing writes it afterwards.
            process.kill()
            process.wait()
            raise
    if process.returncode == 0:
        return
    tool = Path(command[0]).name
    reason = error_line(stderr)[-2000:]
    if process.returncode < 0:
        # Killed by a signal: pg_restore segfaults on some damaged archives, and then prints nothing at all.
        try:
            signame = signal.Signals(-process.returncode).name
        except ValueError:
            signame = f"signal {-process.returncode}"
        crashed = f"{tool} crashed ({signame})"
        if tool == "pg_restore":
            crashed += " reading the archive: the dump is damaged"
        raise BackupError(f"{crashed}{f': {reason}' if reason else ''}.")
    raise BackupError(f"{tool} failed (exit {process.returncode}): {reason or 'it printed no error message'}")


# --- Backup ----------------------------------------------------------------------------------------------------


@dataclass
class BackupResult:
    dump: Path
    manifest_path: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def manifest_path_for(dump: Path) -> Path:
    return dump.with_name(dump.name.removesuffix(dump.suffix) + MANIFEST_SUFFIX)


# A dump holds emails, payloads and encrypted secrets: only its owner may read it, from the moment it exists.
_PRIVATE_FILE = 0o600
_PRIVATE_DIRECTORY = 0o700


def _output_directory(directory: Path) -> list[str]:
    """Create the directory private (0700), or accept an existing one as it is (the operator chose its mode: it
    may be shared with a backup agent) with a warning when other users can enter it. Returns the warnings."""
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"The output directory {directory} is a file: pass a directory (it is created if missing).")
    if directory.is_dir():
        mode = directory.stat().st_mode & 0o777
        if mode & 0o007:
            return [
                f"{directory} is accessible to other users (mode {mode:o}): the backup files are private (0600), "
                f"but their names and sizes are not; `chmod 700 {directory}` keeps the backups to yourself."
            ]
        return []
    try:
        directory.mkdir(parents=True, mode=_PRIVATE_DIRECTORY)
    except OSError as exc:
        raise BackupError(f"Cannot create the output directory {directory}: {exc.strerror}.") from exc
    return []


def _create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 before any tool writes to it: pg_dump and SQLite keep the mode of a file
    that exists (created by them it would follow the umask, usually world-readable)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE))
    except OSError as exc:
        raise BackupError(f"Cannot create {path}: {exc.strerror}.") from exc


def _write_private(path: Path, text: str) -> Path:
    """Write `path` whole or not at all: into a private temporary file next to it, synced, then renamed over it. A
    reader (and a restore) never sees half a manifest, and a failure (ENOSPC, EIO) leaves no file behind."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise BackupError(f"Cannot write {path}: {exc.strerror}.") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # a full disk can show only here (delayed allocation, NFS)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BackupError(f"Cannot write {path}: {exc.strerror}.") from exc
        raise
    return path


def backup(database: Database, directory: Path, *, label: str | None = None) -> BackupResult:
    # The directories this backup creates: a refused one removes them again ("Nothing was written" left an empty
    # --output-dir behind).
    created = [path for path in (directory, *directory.parents) if not path.exists()]
    warnings = _output_directory(directory)
    stamp = label or datetime.now(UTC).strftime("hermes-%Y%m%dT%H%M%S%fZ")
    dump = directory / f"{stamp}.dump" if database.vendor == "postgresql" else directory / f"{stamp}.sqlite3"
    try:
        _create_private(dump)
        try:
            if database.vendor == "postgresql":
                contents, tool = _backup_postgres(database, dump)
            else:
                contents, tool = _backup_sqlite(database, dump)
            if "django_migrations" not in contents["tables"]:
                raise BackupError(
                    f"{database.describe()} has no Hermes tables (no migration history): check DATABASE_URL, or "
                    "run `python manage.py migrate` first. Nothing was written."
                )
            manifest = {
                "format": MANIFEST_FORMAT,
                "created_at": datetime.now(UTC).isoformat(),
                "hermes_version": settings.HERMES_VERSION,
                "vendor": database.vendor,
                "source": database.describe(),
                "dump": {"file": dump.name, "sha256": sha256_file(dump), "bytes": dump.stat().st_size, "tool": tool},
                "session_timezone": _SESSION_TIMEZONE,
                **contents,
            }
            # Inside the cleanup: a disk that fills up while the manifest is written left the whole dump next to a
            # truncated manifest, with a traceback.
            path = _write_private(manifest_path_for(dump), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        except BaseException:
            # Created empty above: a failed backup leaves nothing that looks like one. The manifest too, for a
            # signal that lands just after it was renamed into place.
            dump.unlink(missing_ok=True)
            manifest_path_for(dump).unlink(missing_ok=True)
            raise
    except BaseException:
        for created_directory in created:  # innermost first; one holding anything else (another writer's) stays
            with contextlib.suppress(OSError):
                created_directory.rmdir()
        raise
    return BackupResult(dump, path, manifest, warnings)


def _backup_postgres(database: Database, dump: Path) -> tuple[dict[str, Any], str]:
    pg_dump = _tool("pg_dump")
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    from psycopg import IsolationLevel

    with database.connect() as conn:
        # One snapshot for the dump and for the manifest: both describe the same instant.
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        _run(
            [
                pg_dump,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--snapshot={snapshot}",
                f"--file={dump}",
                database.dbname_arg(),
            ],
            database.libpq_env(),
        )
        contents = describe_contents(conn, "postgresql", timezone=_SESSION_TIMEZONE)
        conn.rollback()
    return contents, version


def _backup_sqlite(database: Database, dump: Path) -> tuple[dict[str, Any], str]:
    try:
        # Read-only: a plain connect would create an empty file at a mistyped path and back that up.
        source = sqlite3.connect(f"{Path(database.name).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.OperationalError as exc:
        raise BackupError(f"Cannot open {database.describe()}: {exc} (does the file exist?).") from exc
    target = sqlite3.connect(dump)
    try:
        source.backup(target)  # consistent even while other processes write (online backup API)
        contents = describe_contents(target, "sqlite", timezone=_SESSION_TIMEZONE)
    finally:
        target.close()
        source.close()
    return contents, f"sqlite3 online backup (SQLite {sqlite3.sqlite_version})"


# --- Restore ---------------------------------------------------------------------------------------------------


def _check_dump_path(dump: Path) -> None:
    if dump.name.endswith(MANIFEST_SUFFIX):
        stem = dump.name.removesuffix(MANIFEST_SUFFIX)
        raise BackupError(
            f"{dump} is a manifest: pass the backup it describes ({stem}.dump or {stem}.sqlite3); its manifest is "
            "found next to it."
        )
    if dump.is_dir():
        raise BackupError(f"{dump} is a directory: pass the .dump (or .sqlite3) file `manage.py backup` wrote in it.")
    if not dump.exists():
        raise BackupError(f"No such backup file: {dump}")


def load_manifest(dump: Path, manifest: Path | None = None) -> dict[str, Any]:
    _check_dump_path(dump)
    path = manifest or manifest_path_for(dump)
    if not path.exists():
        hint = "check the path" if manifest else "pass --manifest"
        raise BackupError(f"No manifest at {path}: {hint} (a backup is only restored with its manifest).")
    if path.is_dir():
        raise BackupError(f"The manifest {path} is a directory: pass the {MANIFEST_SUFFIX} file.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"{path} is not a {_FORMATS_TEXT} manifest: it cannot be read as JSON ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
        raise BackupError(f"{path} is not a {_FORMATS_TEXT} manifest.")
    if not isinstance(data.get("dump"), dict) or not isinstance(data["dump"].get("sha256"), str):
        raise BackupError(f"{path} is not a {_FORMATS_TEXT} manifest: 'dump' must be an object with its 'sha256'.")
    actual = sha256_file(dump)
    if actual != data["dump"]["sha256"]:
        raise BackupError(
            f"{dump} does not match its manifest (sha256 {actual[:12]}… ≠ {data['dump']['sha256'][:12]}…): "
            "the file is damaged or belongs to another backup."
        )
    if problem := _manifest_problem(data):
        # Checked before anything is restored: a manifest that fails here used to fail after pg_restore had
        # filled the target, with a traceback.
        raise BackupError(f"{path} is not a {_FORMATS_TEXT} manifest: {problem}.")
    return data


def _manifest_problem(data: dict[str, Any]) -> str | None:
    """What in a manifest's structure restore and verify could not use, or None."""
    tables = data.get("tables")
    if data.get("vendor") not in ("postgresql", "sqlite"):
        return "'vendor' must be postgresql or sqlite"
    if not isinstance(tables, dict) or not all(isinstance(entry, dict) for entry in tables.values()):
        return "'tables' must be an object of table name to its recorded contents"
    schema = data.get("schema")
    if not isinstance(schema, list) or not all(isinstance(line, str) for line in schema):
        return "'schema' must be a list of lines"
    if not isinstance(data.get("schema_fingerprint"), str):
        return "'schema_fingerprint' must be a string"
    return None


def _check_restorable(dump: Path, database: Database) -> None:
    """Fail before the target is emptied for what would make the restore itself fail: no pg_restore, an archive
    it cannot read (damaged, or written by a newer pg_dump), a file that is no SQLite database. --force on the
    live database otherwise left it empty and restored nothing."""
    if database.vendor == "postgresql":
        # The whole archive is read and decompressed into nothing (no database is touched): a damaged block
        # anywhere fails here, not after the target was emptied (--list reads only the table of contents).
        _run([_tool("pg_restore"), "--file", os.devnull, str(dump)], database.libpq_env())
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)) as source:
            problems = [row[0] for row in source.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{dump} cannot be restored: {exc} (is it a SQLite backup?).") from exc
    if problems != ["ok"]:
        raise BackupError(f"{dump} cannot be restored: it is damaged ({'; '.join(problems[:3])}).")


def has_tables(database: Database) -> bool:
    if database.vendor == "sqlite":
        if not Path(database.name).exists():
            return False
        with contextlib.closing(database.connect()) as conn:
            return bool(_table_columns(conn, "sqlite"))
    with database.connect() as conn:
        return bool(_table_columns(conn, "postgresql"))


def ensure_database(database: Database) -> bool:
    """Create the target Postgres database when missing; return whether it was created."""
    if database.vendor == "sqlite":
        return not Path(database.name).exists()
    import psycopg
    from psycopg import sql

    try:
        with database.connect(dbname="postgres") as conn:
            conn.autocommit = True
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database.name]).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
            return True
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        return False  # another restore created it a moment ago: the restore lock decides which one goes on
    except psycopg.Error as exc:  # a role without CREATEDB, a name Postgres refuses: one line, not a traceback
        raise BackupError(
            f"Cannot create {database.describe()}: {error_line(exc)}. Create it first (createdb, as a role that "
            "may), or restore as a role with CREATEDB."
        ) from exc


def _empty(database: Database) -> None:
    if database.vendor == "sqlite":
        Path(database.name).unlink(missing_ok=True)
        return
    with database.connect() as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@dataclass
class Verification:
    schema_equal: bool
    tables: dict[str, dict[str, Any]]  # table -> {"expected", "actual", "equal"}
    schema_diff: list[str]

    @property
    def ok(self) -> bool:
        return self.schema_equal and all(t["equal"] for t in self.tables.values())


def verify(database: Database, manifest: dict[str, Any]) -> Verification:
    if database.vendor == "sqlite" and not Path(database.name).is_file():
        # Opening it would create an empty file, then report every table of the backup as missing.
        raise BackupError(f"There is no database at {database.describe()}: nothing to verify.")
    checks = {table: TableCheck.from_manifest(table, entry) for table, entry in manifest["tables"].items()}
    try:
        with contextlib.closing(database.connect()) as conn:
            contents = describe_contents(conn, database.vendor, checks, timezone=manifest.get("session_timezone"))
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{database.describe()} cannot be read to verify it: {exc}.") from exc
    expected_lines, actual_lines = manifest["schema"], contents["schema"]
    diff = [f"- {line}" for line in sorted(set(expected_lines) - set(actual_lines))]
    diff += [f"+ {line}" for line in sorted(set(actual_lines) - set(expected_lines))]
    tables = {}
    for table, expected in manifest["tables"].items():
        actual = contents["tables"].get(table)
        # Compared on what the manifest recorded: a /1 entry has no check description, only rows and digest.
        equal = actual is not None and {key: actual.get(key) for key in expected} == expected
        tables[table] = {"expected": expected, "actual": actual, "equal": equal}
    return Verification(contents["schema_fingerprint"] == manifest["schema_fingerprint"], tables, diff)


def restore(dump: Path, database: Database, manifest: dict[str, Any], *, force: bool = False) -> Verification:
    if manifest["vendor"] != database.vendor:
        raise BackupError(f"This is a {manifest['vendor']} backup; the target is {database.vendor}.")
    if database.vendor == "sqlite" and Path(database.name).resolve() == dump.resolve():
        # --force would empty the target first: the backup itself would be lost.
        raise BackupError(f"The target {database.describe()} is the backup file itself: restore into another file.")
    _check_restorable(dump, database)
    ensure_database(database)
    with _restore_lock(database):
        return _restore_locked(dump, database, manifest, force=force)


# pg_try_advisory_lock(classid, objid): "HRMS" and 1 = a restore. Advisory locks belong to one database, so this
# key taken on a connection to the target locks that database only.
_RESTORE_LOCK_KEY = (0x48524D53, 1)


def _holder_name() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def _restore_lock(database: Database) -> Iterator[None]:
    """Hold the target for the whole restore: two restores into one database at once failed with pg_restore's raw
    "relation already exists", and with --force each dropped the schema the other was filling. The second one is
    refused in one line, before it touches anything. Postgres: an advisory lock on a connection to the target
    (released by the server when this process dies, however it dies). SQLite: flock on `<target>.restore-lock`."""
    if database.vendor == "sqlite":
        with _sqlite_restore_lock(database):
            yield
        return
    with contextlib.closing(database.connect()) as conn:
        conn.autocommit = True  # the lock is the session's: no transaction left open for the restore's duration
        conn.execute("SELECT set_config('application_name', %s, false)", [f"hermes restore ({_holder_name()})"])
        if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _RESTORE_LOCK_KEY).fetchone()[0]:
            holder = conn.execute(
                "SELECT a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid = %s AND l.objid = %s AND l.objsubid = 2",
                _RESTORE_LOCK_KEY,
            ).fetchone()
            raise _busy(database, holder[0] if holder else None)
        yield  # closing the connection releases the lock


def _busy(database: Database, holder: str | None) -> BackupError:
    who = holder.removeprefix("hermes restore ").strip("()") if holder else ""
    return BackupError(
        f"Another restore into {database.describe()} is running{f' ({who})' if who else ''}: wait for it to finish "
        "(or stop it) and try again. Nothing was changed."
    )


@contextlib.contextmanager
def _sqlite_restore_lock(database: Database) -> Iterator[None]:
    """The lock is a file of its own: the restore replaces the target file itself (--force deletes it)."""
    target = Path(database.name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"Cannot create the directory of {database.describe()}: {exc.strerror}.") from exc
    if sys.platform == "win32":  # no flock there: not locked (docs/backup.md)
        yield
        return
    import fcntl

    lock = target.with_name(target.name + ".restore-lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, _PRIVATE_FILE)
        except OSError as exc:
            raise BackupError(f"Cannot open {database.describe()}: cannot create {lock}: {exc.strerror}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 512).decode(errors="replace").strip()
            os.close(fd)
            raise _busy(database, holder) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file the restore that held it had just removed: take the one that is there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, _holder_name().encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: whoever opened this file sees it gone and starts over
        os.close(fd)


def _restore_locked(dump: Path, database: Database, manifest: dict[str, Any], *, force: bool) -> Verification:
    if has_tables(database):
        if not force:
            raise BackupError(
                f"{database.describe()} already has tables: restore into a fresh database (--target-url), "
                "or pass --force to drop everything in it first."
            )
        _empty(database)
    if database.vendor == "postgresql":
        _run(
            [
                _tool("pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                database.dbname_arg(),
                str(dump),
            ],
            database.libpq_env(),
        )
    else:
        # The target's directory exists (_sqlite_restore_lock made it). The target is opened on its own: a target
        # that cannot be opened (`sqlite:////proc/x.sqlite3`) was blamed on the backup ("cannot be restored … is it
        # a SQLite backup?"), which _check_restorable had just read.
        try:
            with (
                contextlib.closing(database.connect()) as target,
                contextlib.closing(sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)) as source,
            ):
                source.backup(target)
        except sqlite3.DatabaseError as exc:
            Path(database.name).unlink(missing_ok=True)  # the target was empty (or emptied): leave no stub behind
            raise BackupError(f"{dump} cannot be restored into {database.describe()}: {exc}.") from exc
        Path(database.name).chmod(0o600)  # it holds what the dump held, which is private (0600) too
    return verify(database, manifest)


def drop_database(database: Database) -> None:
    """Tests and operators cleaning up a scratch restore."""
    if database.vendor == "sqlite":
        Path(database.name).unlink(missing_ok=True)
        return
    from psycopg import sql

    with database.connect(dbname="postgres") as conn:
        conn.autocommit = True
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name)))


def iter_report(verification: Verification) -> Iterator[str]:
    yield f"schema      {'identical' if verification.schema_equal else 'DIFFERENT'}"
    yield from (f"            {line}" for line in verification.schema_diff[:20])
    width = max(map(len, verification.tables), default=0)  # as `backup` sizes its column: no row pushed out of line
    for table, result in verification.tables.items():
        actual = result["actual"] or {"rows": "missing"}
        mark = "ok" if result["equal"] else "MISMATCH"
        check = CHECK_LABELS[TableCheck.from_manifest(table, result["expected"]).kind]
        yield f"{table:<{width}} {mark:<8} rows {actual['rows']} (expected {result['expected']['rows']}; {check})"
