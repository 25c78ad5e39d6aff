"""Django's flush, guarded: it refuses to wipe a production database unless forced. An unreachable database is
one line (OutageInOneLine), as for `migrate`, Hermes' other override: it was a traceback of some 90 lines."""

from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands.flush import Command as FlushCommand

from apps.core.guards import refuse_in_production
from apps.core.management.base import OutageInOneLine


class Command(OutageInOneLine, FlushCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--force-production", action="store_true", help="Really flush a production database.")

    def handle(self, **options: Any) -> None:
        refuse_in_production("flush", forced=options["force_production"])
        super().handle(**options)
