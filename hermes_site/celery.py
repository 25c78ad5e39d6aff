"""The Celery app. The worker prints the startup summary when it is ready."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")

app = Celery("hermes")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _print_summary(**_: Any) -> None:
    from apps.core.startup import print_summary

    print_summary("worker")
