"""The base of Hermes' own management commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from apps.core import checks


class OutageInOneLine:
    """For a command class: the database being unreachable is one line (and exit 1), like the API's 503
    `database_unavailable`, instead of a traceback through Django's connection code. Mixed into Hermes' commands
    (HermesCommand) and into Django's `migrate` (apps/core/management/commands/migrate.py)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)  # type: ignore[misc]
        except Exception as error:
            if checks.is_database_outage(error):
                raise database_unreachable(error) from error
            raise


class HermesCommand(OutageInOneLine, BaseCommand):
    """A command that an operator runs while the database is down says so in one line (OutageInOneLine). So does
    one run on a database whose migrations are not applied (`relation "accounts_user" does not exist`)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            if pending := _unapplied_migrations():
                # A missing table is ProgrammingError on Postgres, OperationalError on SQLite: the migration plan
                # says which it is, whatever the driver called it.
                # The driver's first line names the table; Postgres' LINE/caret lines after it quote the SQL.
                missing = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise CommandError(
                    f"The database has {len(pending)} unapplied migrations ({missing}): run `python manage.py "
                    "migrate` first."
                ) from error
            raise  # anything else, an error the database answered with included: the traceback informs


def database_unreachable(error: BaseException) -> CommandError:
    return CommandError(
        f"The database is unreachable ({checks.error_line(error)}); nothing was changed. Check DATABASE_URL and "
        "that the server runs (`python manage.py doctor`)."
    )


def _unapplied_migrations() -> list[str]:
    from django.db import connection

    try:
        return checks.pending_migrations(connection)
    except DatabaseError:  # the plan cannot be read either: the original error is the one to show
        return []
