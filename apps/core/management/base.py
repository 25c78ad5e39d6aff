"""The base of Hermes' own management commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from apps.core import checks


class HermesCommand(BaseCommand):
    """A command that an operator runs while the database is down says so in one line (and exits 1), like the API's
    503 `database_unavailable`, instead of a traceback through Django's connection code."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as error:
            if checks.database_reachable():
                raise  # the database answered with this error: the traceback is the information
            raise CommandError(
                f"The database is unreachable ({str(error).splitlines()[0]}); nothing was changed. Check "
                "DATABASE_URL and that the server runs (`python manage.py doctor`)."
            ) from error
