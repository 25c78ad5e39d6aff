from typing import Any

from django.core.management.base import CommandError

from apps.core.checks import HealthReport
from apps.core.management.base import HermesCommand
from apps.core.startup import print_summary


class Command(HermesCommand):
    help = (
        "Print the startup summary (configuration, dependencies, warnings); exit 1 when a dependency is down "
        "(`health` exits 1 only when a readiness check fails; both end with the same verdict line)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = HealthReport(print_summary("doctor", self.stdout))
        if report.failing or report.degraded:
            raise CommandError(report.verdict())
