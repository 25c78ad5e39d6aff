from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from apps.core.management.base import HermesCommand
from apps.ops.backup import BackupError, Database, Interrupted, backup, stop_on_signals


class Command(HermesCommand):
    help = "Back up the database: pg_dump (custom format) or SQLite online backup, plus a verifiable manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output-dir", default=str(settings.HERMES_BACKUP_DIR), help="Where to write files.")
        parser.add_argument("--database", default="default", help="Database alias to back up.")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if alias not in settings.DATABASES:
            raise CommandError(f"No database alias '{alias}' in DATABASES (there is: {', '.join(settings.DATABASES)}).")
        try:
            with stop_on_signals():
                result = backup(Database.from_settings(alias), Path(options["output_dir"]))
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        except Interrupted as stopped:  # the partial files are gone by now (backup()'s cleanup ran)
            raise CommandError(
                f"Backup stopped by {stopped.signal.name}: pg_dump (if running) was stopped and the partial backup "
                "removed; nothing was written.",
                returncode=stopped.exit_code,
            ) from stopped
        manifest = result.manifest
        self.stdout.write(f"backup    {result.dump} ({manifest['dump']['bytes']} bytes, {manifest['dump']['tool']})")
        self.stdout.write(f"manifest  {result.manifest_path}")
        self.stdout.write(f"schema    {manifest['schema_fingerprint'][:16]}… ({len(manifest['schema'])} lines)")
        # As wide as the longest name: a fixed width let federation_federationauditevent push its row out of line.
        width = max(map(len, manifest["tables"]), default=0)
        for table, summary in manifest["tables"].items():
            digest = f"  {summary['digest'][:16]}…" if "digest" in summary else ""
            self.stdout.write(f"  {table:<{width}} {summary['rows']:>8} rows{digest}")
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
