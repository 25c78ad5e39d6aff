"""gunicorn settings for the web process (Procfile: `gunicorn -c deploy/gunicorn.conf.py ...`).

A file outside the hermes_site package on purpose: the master process must not import Hermes (and so create
metric files) before `on_starting` has prepared the directory.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics to files in that directory and `/metrics`
sums them; the directory must start empty and a dead worker's live gauges must be dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # one line, as hermes_site's own check of the variable says it (not a traceback)
            raise SystemExit(
                f"hermes: PROMETHEUS_MULTIPROC_DIR={directory!r} must be a directory path (not an existing file, nor "
                f"under one): {exc.strerror}."
            ) from None
        for stale in path.glob("*.db"):  # values from a previous run would be summed into this one
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
