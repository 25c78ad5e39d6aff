from typing import Any

from django.core.management.base import CommandError

from apps.core.checks import HealthReport, contributed_probe, dependency_probes
from apps.core.management.base import HermesCommand
from apps.core.startup import summary


class Command(HermesCommand):
    help = (
        "Print the startup summary (configuration, dependencies, warnings); exit 1 when a dependency is down or "
        "stored secrets (federation link keys) cannot be decrypted (`health` exits 1 only when a readiness check "
        "fails; both end with the same verdict line)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        probes = dependency_probes()
        # Health's `link_keys` line too (registered by apps.ops): doctor is the one command an operator runs after
        # changing the configuration, and a changed SECRET_KEY or HERMES_FIELD_KEY breaks every federation link
        # without any dependency being down. Not checked (database down or not migrated): its line says why.
        link_keys = contributed_probe("link_keys")
        if link_keys is not None and link_keys.available:
            probes.append(link_keys)
        self.stdout.write("\n".join(line.text for line in summary("doctor", probes)))
        report = HealthReport(probes)
        if report.failing or report.degraded:
            raise CommandError(report.verdict())
