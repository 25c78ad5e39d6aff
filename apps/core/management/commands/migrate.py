"""Django's migrate, with an unreachable database said in one line: it is the first command `make run` and a
deployment run, and a mistyped DATABASE_URL read as some 50 lines of frames through Django's connection code. A
migration that fails on a reachable database keeps its traceback: it says where."""

from django.core.management.commands.migrate import Command as MigrateCommand

from apps.core.management.base import OutageInOneLine


class Command(OutageInOneLine, MigrateCommand):
    pass
