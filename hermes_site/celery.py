"""The Celery app. The worker prints the startup summary when it is ready and heartbeats into Redis for health."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")

app = Celery("hermes")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    from apps.core.startup import print_summary
    from apps.ops.worker import start_heartbeat

    start_heartbeat(sender)
    print_summary("worker")


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    from apps.ops.worker import stop_heartbeat

    stop_heartbeat()
