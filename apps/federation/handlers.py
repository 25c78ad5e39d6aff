"""What an accepted inbound message makes happen, by type. Runs on a worker after the receipt was sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.federation.models import InboxEntry

logger = logging.getLogger(__name__)

# An entry still unhandled this long after arrival lost its job (broker down, worker killed): run it again.
REDRIVE_AFTER = timedelta(seconds=30)

Handler = Callable[[InboxEntry], None]
HANDLERS: dict[str, Handler] = {}


def register(message_type: str) -> Callable[[Handler], Handler]:
    def decorator(fn: Handler) -> Handler:
        HANDLERS[message_type] = fn
        return fn

    return decorator


class Unrelated(LookupError):
    """The entry refers to nothing here (a result for a request this instance never sent, or no longer knows): a
    peer's mistake to record on the entry and log in one line, not a handler failure with a traceback."""


class Malformed(ValueError):
    """The entry's payload is not what its type requires (a sequence number that is none, an unknown event kind):
    recorded on the entry with its reason and logged in one line, like Unrelated."""


def handle(entry_id: int) -> None:
    with transaction.atomic():
        entry = (
            InboxEntry.objects.unscoped("handlers work on one entry by id")
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("organization", "peer")
            .filter(pk=entry_id, handled_at__isnull=True)
            .first()
        )
        if entry is None:  # handled already, or another worker is on it
            return
        handler = HANDLERS.get(entry.type)
        try:
            with transaction.atomic():
                if handler is not None:
                    handler(entry)
            entry.handling_error = ""
        except (Unrelated, Malformed) as exc:
            logger.warning("federation: inbox entry %s from %s not handled: %s", entry_id, entry.peer, exc)
            entry.handling_error = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:
            logger.exception("federation: handler for inbox entry %s failed", entry_id)
            entry.handling_error = f"{type(exc).__name__}: {exc}"[:300]
        entry.handled_at = timezone.now()
        entry.save(update_fields=["handled_at", "handling_error"])


def redrive_unhandled(limit: int = 500) -> int:
    from apps.federation.tasks import handle_inbound

    cutoff = timezone.now() - REDRIVE_AFTER
    ids = list(
        InboxEntry.objects.unscoped("sweeper re-drives every org's unhandled entries")
        .filter(handled_at__isnull=True, created_at__lt=cutoff)
        .values_list("pk", flat=True)[:limit]
    )
    for entry_id in ids:
        handle_inbound.delay(entry_id)
    return len(ids)


def has_handler(message_type: str) -> bool:
    return message_type in HANDLERS
