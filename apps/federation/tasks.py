"""Celery jobs: deliver one outbox row, handle one inbox entry, sweep. Each takes an id and re-reads the row:
a duplicate or late job finds nothing to do."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="apps.federation.tasks.deliver", ignore_result=True)
def deliver(outbox_id: int) -> str | None:
    from apps.federation.delivery import deliver as run

    return run(outbox_id)


@shared_task(name="apps.federation.tasks.handle_inbound", ignore_result=True)
def handle_inbound(entry_id: int) -> None:
    from apps.federation.handlers import handle

    handle(entry_id)


@shared_task(name="apps.federation.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, Any]:
    from apps.federation.actions import sweep
    from apps.federation.handlers import redrive_unhandled

    result: dict[str, Any] = sweep()
    result["redriven"] = redrive_unhandled()
    return result
