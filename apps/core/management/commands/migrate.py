"""Django's migrate, with an unreachable database said in one line: it is the first command `make run` and a
deployment run, and a mistyped DATABASE_URL read as some 50 lines of frames through Django's connection code."""

from typing import Any

from django.core.management.commands.migrate import Command as MigrateCommand

from apps.core import checks
from apps.core.management.base import database_unreachable


class Command(MigrateCommand):
    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except Exception as error:
            if checks.is_database_outage(error):
                raise database_unreachable(error) from error
            raise  # a migration that failed on a reachable database: its traceback says where
