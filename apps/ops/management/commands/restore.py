from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.core.guards import refuse_in_production
from apps.core.management.base import HermesCommand
from apps.ops.backup import (
    MANIFEST_FORMAT,
    BackupError,
    Database,
    Interrupted,
    iter_report,
    load_manifest,
    restore,
    stop_on_signals,
    verify,
)


class Command(HermesCommand):
    help = (
        "Restore a backup into a fresh database and verify it against its manifest (schema, row counts, digests). "
        "The target defaults to this instance's database and must have no tables unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dump", help="The .dump (Postgres) or .sqlite3 file written by `manage.py backup`.")
        parser.add_argument("--manifest", help="The manifest (default: next to the dump).")
        parser.add_argument(
            "--target-url", help="Database to restore into, e.g. postgres://…/hermes_restore (created if missing)."
        )
        parser.add_argument("--force", action="store_true", help="Drop everything in a non-empty target first.")
        parser.add_argument("--verify-only", action="store_true", help="Only compare the target with the manifest.")
        parser.add_argument("--force-production", action="store_true", help="Allow this with HERMES_ENV=production.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["verify_only"]:  # a verification only reads: nothing to guard in production
            refuse_in_production("restore", forced=options["force_production"])
        dump = Path(options["dump"])
        try:
            manifest = load_manifest(dump, Path(options["manifest"]) if options["manifest"] else None)
            target = Database.from_url(options["target_url"]) if options["target_url"] else Database.from_settings()
            if options["verify_only"]:
                result = verify(target, manifest)
            else:
                self.stdout.write(f"restoring {dump.name} into {target.describe()}")
                with stop_on_signals():
                    result = restore(dump, target, manifest, force=options["force"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        except Interrupted as stopped:  # pg_restore was stopped with it; the restore lock is released
            raise CommandError(
                f"Restore stopped by {stopped.signal.name}: if it had begun filling {target.describe()}, that "
                "database is incomplete; restore again (with --force) before using it.",
                returncode=stopped.exit_code,
            ) from stopped
        for line in iter_report(result):
            self.stdout.write(line)
        if not result.ok:
            raise CommandError(f"{target.describe()} does NOT match the backup manifest (see above).")
        if manifest["format"] == MANIFEST_FORMAT:
            scope = f"schema and all {len(result.tables)} tables"
        else:  # an older manifest recorded fewer tables: say so rather than imply everything was compared
            scope = f"schema and the {len(result.tables)} tables a {manifest['format']} manifest records"
        self.stdout.write(f"verified: {target.describe()} matches the backup ({scope}).")
