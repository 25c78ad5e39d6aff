import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.core.checks import health_report
from apps.core.management.base import HermesCommand


class Command(HermesCommand):
    help = "Print the health breakdown (same as GET /api/v1/health); exit 1 when not ready."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the JSON document the endpoint returns.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = health_report()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            self.stdout.write(f"Hermes health: {report.status}")
            for probe in report.probes:
                mark = {"ok": "ok  ", "down": "DOWN", "not_available": "n/a "}[probe.status]
                self.stdout.write(f"  {probe.name:<16} {mark} {probe.detail} ({probe.latency_ms:.1f} ms)")
                if not probe.ok and probe.fix:
                    self.stdout.write(f"  {'':<16}      fix: {probe.fix}")
        if not report.ready:
            raise CommandError(report.verdict())
