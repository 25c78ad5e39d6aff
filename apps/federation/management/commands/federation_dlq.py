"""Dead-letter queue triage for operators (docs/federation.md).

manage.py federation_dlq list    [--org slug]
manage.py federation_dlq show    <message-id>
manage.py federation_dlq requeue (<message-id> ... | --all) [--org slug] [--reason text]
manage.py federation_dlq discard (<message-id> ... | --all) [--org slug] [--reason text]
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import QuerySet

from apps.core.management.base import HermesCommand
from apps.federation import actions
from apps.federation.models import DeliveryAttempt, Outbox, OutboxStatus
from apps.orgs.models import Organization


class Command(HermesCommand):
    help = "List, inspect, requeue or discard dead-lettered federation messages."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "operation",
            choices=["list", "show", "requeue", "discard"],
            help="list the dead letters, show one, requeue them for delivery, or discard them",
        )
        parser.add_argument("ids", nargs="*", help="message ids")
        parser.add_argument("--all", action="store_true", help="requeue/discard: every dead letter (of --org)")
        parser.add_argument("--org", help="limit to one org slug")
        parser.add_argument("--reason", default="", help="recorded on the audit event")

    def _dead(self, ids: list[uuid.UUID], org: str | None) -> QuerySet[Outbox]:
        rows = (
            Outbox.objects.unscoped("operator command across orgs")
            .filter(status=OutboxStatus.DEAD)
            .select_related("message", "message__peer", "organization")
            .order_by("dead_at")
        )
        if org:
            rows = rows.filter(organization__slug=org)
        if ids:
            rows = rows.filter(message_id__in=ids)
        return rows

    def handle(self, *args: Any, **options: Any) -> None:
        operation = options["operation"]
        ids = []
        for value in options["ids"]:
            try:
                ids.append(uuid.UUID(value))
            except ValueError:
                raise CommandError(f"'{value}' is not a message id (a UUID, as `list` prints them).") from None
        if options.get("org") and not Organization.objects.filter(slug=options["org"]).exists():
            raise CommandError(f"No organization '{options['org']}'.")
        rows = self._dead(ids, options.get("org"))
        if operation == "list":
            if not rows.exists():
                of = f" of {options['org']}" if options.get("org") else ""
                self.stdout.write(f"The dead-letter queue{of} is empty.")
            for row in rows:
                self.stdout.write(
                    f"{row.message_id} {row.organization.slug} -> {row.message.recipient} "
                    f"attempts={row.attempts} dead_at={row.dead_at:%Y-%m-%d %H:%M:%S} {row.last_error}"
                )
            return
        if operation == "show":
            if len(ids) != 1:
                raise CommandError("show takes exactly one message id")
            found = rows.first()
            if found is None:
                raise CommandError("not in the dead-letter queue")
            attempts = DeliveryAttempt.objects.for_org(found.organization).filter(outbox=found).order_by("number")
            summary = {
                "recipient": found.message.recipient,
                "type": found.message.type,
                "last_error": found.last_error,
                "message": found.message.payload,
            }
            self.stdout.write(json.dumps(summary, indent=2))
            for a in attempts:
                self.stdout.write(
                    f"  #{a.number} {a.created_at:%H:%M:%S} {a.duration_ms:.0f} ms "
                    f"{a.http_status or '-'} {a.outcome} {a.error} {' '.join(a.response_excerpt.split())[:120]}"
                )
            return
        if not ids and not options["all"]:
            raise CommandError(f"{operation} needs message ids or --all")
        chosen = list(rows)
        missing = {str(i) for i in ids} - {str(row.message_id) for row in chosen}
        if missing:
            # All or nothing: an operator who named a message that is not (or no longer) dead learns it before
            # anything is requeued or discarded.
            raise CommandError(
                f"not in the dead-letter queue{' of ' + options['org'] if options.get('org') else ''}: "
                f"{', '.join(sorted(missing))}; nothing was {operation}d"
            )
        fn = actions.requeue if operation == "requeue" else actions.discard
        done = fn(chosen, reason=options["reason"] or f"{operation} by operator command")
        self.stdout.write(f"{operation}: {len(done)} message(s)")
