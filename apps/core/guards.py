from django.conf import settings
from django.core.management.base import CommandError


def refuse_in_production(command: str, *, forced: bool) -> None:
    """Destructive commands call this first: production data is only dropped on an explicit flag."""
    if settings.HERMES_ENV == "production" and not forced:
        raise CommandError(
            f"{command} destroys data and HERMES_ENV=production: refusing. "
            "Re-run with --force-production if you really mean it (take a backup first: manage.py backup)."
        )
