"""The base of Hermes' own management commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.core import checks


class HermesCommand(BaseCommand):
    """A command that an operator runs while the database is down says so in one line (and exits 1), like the API's
    503 `database_unavailable`, instead of a traceback through Django's connection code."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except Exception as error:
            if not checks.is_database_outage(error):
                raise  # anything else, an error the database answered with included: the traceback informs
            raise CommandError(
                f"The database is unreachable ({checks.error_line(error)}); nothing was changed. Check "
                "DATABASE_URL and that the server runs (`python manage.py doctor`)."
            ) from error
