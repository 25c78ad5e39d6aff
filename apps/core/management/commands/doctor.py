from typing import Any

from django.core.management.base import CommandError

from apps.core.checks import HealthReport, dependency_probes
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
        # Imported here, from ops (health's own line): core imports no app, but doctor is the one command an
        # operator runs after changing the configuration, and a changed SECRET_KEY or HERMES_FIELD_KEY breaks
        # every federation link without any dependency being down.
        from apps.ops.health import probe_link_keys

        link_keys = probe_link_keys()
        if link_keys.available:  # not checked (the database is down or not migrated): the database line says why
            probes.append(link_keys)
        self.stdout.write("\n".join(line.text for line in summary("doctor", probes)))
        report = HealthReport(probes)
        if report.failing or report.degraded:
            raise CommandError(report.verdict())
