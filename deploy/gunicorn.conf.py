"""gunicorn settings for the web process (Procfile: `gunicorn -c deploy/gunicorn.conf.py ...`).

A file outside the hermes_site package on purpose: the master process must not import Hermes (and so create
metric files) before `on_starting` has prepared the directory.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics to files in that directory and `/metrics`
sums them; the directory must start empty and a dead worker's live gauges must be dropped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

CONFIG_MODULE = Path(__file__).resolve().parent.parent / "hermes_site" / "config.py"


def _configuration_module() -> Any:
    """hermes_site.config is plain Python, loaded from its file so that the master does not import the hermes_site
    package (its __init__ starts the Celery app and declares metrics)."""
    spec = importlib.util.spec_from_file_location("hermes_configuration_check", CONFIG_MODULE)
    assert spec is not None and spec.loader is not None, CONFIG_MODULE
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up there while its classes are created
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _validate_configuration() -> None:
    """The configuration's one-line refusal and exit 1, in the master before it binds or forks.

    Only the workers read the configuration otherwise: each printed the error and exited 1, and the master
    replaced it forever (133 boots a minute)."""
    _configuration_module().load_or_exit()


def _logconfig() -> dict[str, Any]:
    """With LOG_FORMAT=json, gunicorn's own lines (startup, worker boots and exits) as the application's
    JSON lines, through the same formatter and filters (apps.core.logging: no Django, no hermes_site); its plain
    text otherwise. A configuration that does not load keeps gunicorn's default: on_starting refuses it."""
    module = _configuration_module()
    try:
        config = module.load()
    except module.ConfigError:
        return {}
    if config["LOG_FORMAT"] != "json":
        return {}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context", "redact"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "apps.core.logging.ContextFilter"},
            "redact": {"()": "apps.core.logging.RedactFilter"},
        },
        "formatters": {"json": {"()": "apps.core.logging.JsonFormatter"}},
        "handlers": {"default": {**handler, "stream": "ext://sys.stderr"}},
        "root": {"level": config["LOG_LEVEL"], "handlers": ["default"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["default"], "propagate": False},
            # A logging config turns gunicorn's access log on; hermes.request already writes a line per request
            # (with its context), so gunicorn's copy stays off, as without one.
            "gunicorn.access": {"level": "WARNING", "handlers": ["default"], "propagate": False},
        },
    }


logconfig_dict = _logconfig()


def on_starting(server: Any) -> None:
    _validate_configuration()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # valid, but not ours to create (permissions, a read-only file system)
            raise SystemExit(
                f"hermes: configuration error: PROMETHEUS_MULTIPROC_DIR={directory!r} cannot be created: "
                f"{exc.strerror}."
            ) from None
        for stale in path.glob("*.db"):  # values from a previous run would be summed into this one
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
