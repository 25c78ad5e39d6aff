from typing import Any

from django.core.management.base import CommandError

from apps.core.management.base import HermesCommand
from apps.core.startup import print_summary


class Command(HermesCommand):
    help = "Print the startup summary (configuration, dependencies, warnings); exit 1 when a dependency is down."

    def handle(self, *args: Any, **options: Any) -> None:
        probes = print_summary("doctor", self.stdout)
        down = [p.name for p in probes if not p.ok]
        if down:
            raise CommandError(f"not healthy: {', '.join(down)}")
