"""The one-screen startup summary printed by the web process, the worker and `manage.py doctor`."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.core.checks import Probe, dependency_probes

logger = logging.getLogger("hermes.startup")


@dataclass(frozen=True)
class SummaryLine:
    """One line of the summary: `text` for the terminal (aligned), or one log record (`message` and `fields`)."""

    text: str
    message: str
    level: int = logging.INFO
    fields: dict[str, Any] = field(default_factory=dict)


def summary(process: str, probes: list[Probe]) -> list[SummaryLine]:
    def line(label: str, value: str, level: int = logging.INFO, **fields: Any) -> SummaryLine:
        return SummaryLine(f"  {label:<16} {value}", f"{label} {value}", level, fields)

    environment = f"{settings.HERMES_ENV} (settings: {settings.SETTINGS_MODULE})"
    title = f"Hermes {settings.HERMES_VERSION} — {process}"
    lines = [
        SummaryLine(title, title, fields={"hermes_version": settings.HERMES_VERSION}),
        line("environment", environment, environment=settings.HERMES_ENV),
    ]
    for probe in probes:
        # "check_status", not "status": hermes.request lines carry the HTTP status (a number) in that field.
        lines.append(
            SummaryLine(
                f"  {probe.name:<16} {'ok  ' if probe.ok else 'DOWN'} {probe.detail}",
                f"{probe.name} {'ok' if probe.ok else 'DOWN'} {probe.detail}",
                logging.INFO if probe.ok else logging.WARNING,
                {"check": probe.name, "check_status": probe.status, "detail": probe.detail},
            )
        )
    flags = ", ".join(f"{name}={'on' if on else 'off'}" for name, on in sorted(settings.HERMES_FEATURES.items()))
    lines.append(line("features", flags, features=dict(settings.HERMES_FEATURES)))
    warnings = list(settings.HERMES_CONFIG_WARNINGS)
    warnings += [(f"{p.name} is down: {p.detail}", p.fix) for p in probes if not p.ok]
    for problem, fix in warnings:
        lines.append(line("warning", f"{problem} — fix: {fix}", logging.WARNING, problem=problem, fix=fix))
    if not warnings:
        lines.append(line("warnings", "none"))
    return lines


def summary_lines(process: str, probes: list[Probe] | None = None) -> list[str]:
    return [line.text for line in summary(process, dependency_probes() if probes is None else probes)]


def print_summary(process: str, stream: Any = None) -> list[Probe]:
    """A server's summary goes to stderr, where its log lines go: with LOG_FORMAT=json as one JSON log record per
    line (a pipeline parsing JSON dropped the plain-text lines, configuration warnings included), else as text.
    Given a `stream` (doctor's stdout), it is a report for a person: always text."""
    probes = dependency_probes()
    lines = summary(process, probes)
    if stream is None and settings.LOG_FORMAT == "json":
        for line in lines:
            # "role", not "process": LogRecord.process is the pid.
            logger.log(line.level, line.message, extra={"event": "startup_summary", "role": process, **line.fields})
    else:
        print("\n".join(line.text for line in lines), file=stream or sys.stderr, flush=True)
    return probes


def print_summary_in_background(process: str) -> None:
    """For server entry points: probing must not delay serving (or run DB calls on the event loop)."""
    import threading

    from django.db import connections

    def run() -> None:
        try:
            print_summary(process)
        finally:
            connections.close_all()

    threading.Thread(target=run, name="hermes-startup-summary", daemon=True).start()
