"""Django's flush, guarded: it refuses to wipe a production database unless forced."""

from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands.flush import Command as FlushCommand

from apps.core.guards import refuse_in_production


class Command(FlushCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--force-production", action="store_true", help="Really flush a production database.")

    def handle(self, **options: Any) -> None:
        refuse_in_production("flush", forced=options["force_production"])
        super().handle(**options)
