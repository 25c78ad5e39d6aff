"""The Celery app. The worker prints the startup summary when it is ready, heartbeats into Redis for health and,
with CELERY_WORKER_METRICS_PORT set, serves its Prometheus metrics."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_shutdown, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")


def _prepare_metrics_directory() -> None:
    """prometheus_client opens its value files in PROMETHEUS_MULTIPROC_DIR as soon as the first metric is declared
    (by the imports below), so the directory must exist first. This module is imported with the hermes_site package,
    before settings.py validates the configuration: the value is validated here, so that a file there is the
    configuration's one-line refusal (exit 1), not a FileExistsError traceback out of every command."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    # Imported here: `python -m hermes_site.config` (make docs) imports this package first, and a config module
    # already imported when runpy executes it draws a RuntimeWarning.
    from hermes_site.config import load_or_exit

    directory = load_or_exit()["PROMETHEUS_MULTIPROC_DIR"]
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:  # not ours to create (permissions, a read-only file system)
        print(
            f"hermes: configuration error: PROMETHEUS_MULTIPROC_DIR={os.environ['PROMETHEUS_MULTIPROC_DIR']!r} "
            f"cannot be created: {exc.strerror}.",
            file=sys.stderr,
        )
        sys.exit(1)


_prepare_metrics_directory()

# Every job derives from HermesJob: a database outage is one warning line, not a traceback per job.
app = Celery("hermes", task_cls="apps.core.jobs:HermesJob")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import apps.core.celery_signals  # noqa: E402, F401  (connects job metrics and log-context handlers)


@worker_init.connect
def _on_worker_init(**_: Any) -> None:
    from apps.ops.metrics import clear_stale_metric_files

    clear_stale_metric_files()


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    from django.conf import settings

    from apps.core.startup import print_summary
    from apps.ops.metrics import start_worker_exporter
    from apps.ops.worker import start_heartbeat

    start_heartbeat(sender)
    start_worker_exporter(settings.CELERY_WORKER_METRICS_HOST, settings.CELERY_WORKER_METRICS_PORT)
    print_summary("worker")
    _warn_of_undecryptable_link_keys()


def _warn_of_undecryptable_link_keys() -> None:
    """The worker signs and verifies federation messages: with link keys its field key cannot decrypt (SECRET_KEY
    or HERMES_FIELD_KEY changed), every delivery fails. Said once at start, after the summary, with the fix."""
    from apps.ops.health import probe_link_keys

    probe = probe_link_keys()
    if probe.ok or not probe.available:
        return
    problem = f"link_keys is down: {probe.detail}"
    logging.getLogger("hermes.startup").warning(
        "warning %s — fix: %s",
        problem,
        probe.fix,
        extra={"event": "startup_summary", "role": "worker", "problem": problem, "fix": probe.fix},
    )


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    from apps.ops.metrics import stop_worker_exporter
    from apps.ops.worker import stop_heartbeat

    stop_heartbeat()
    stop_worker_exporter()


@worker_process_shutdown.connect
def _on_child_exit(pid: int | None = None, **_: Any) -> None:
    from apps.core.tracing import flush
    from apps.ops.metrics import mark_process_dead

    flush()  # prefork children leave through os._exit: atexit would not export their last spans
    mark_process_dead(pid or os.getpid())


@beat_init.connect
def _on_beat_init(**_: Any) -> None:
    # Health reads beat as alive from the last `beat_heartbeat` run; its schedule first fires one interval after
    # start, so a freshly started platform reported "beat: degraded" for its first 15 s. Send one now.
    from apps.ops.tasks import beat_heartbeat

    try:
        beat_heartbeat.delay()
    except Exception as exc:  # broker down: beat itself retries the connection; health says so meanwhile
        logging.getLogger(__name__).warning("first beat heartbeat not sent: %s", exc)
