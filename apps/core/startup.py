"""The one-screen startup summary printed by the web process, the worker and `manage.py doctor`."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings

from apps.core.checks import Probe, dependency_probes


def summary_lines(process: str, probes: list[Probe] | None = None) -> list[str]:
    probes = dependency_probes() if probes is None else probes
    lines = [
        f"Hermes {settings.HERMES_VERSION} — {process}",
        f"  environment      {settings.HERMES_ENV} (settings: {settings.SETTINGS_MODULE})",
    ]
    for probe in probes:
        mark = "ok  " if probe.ok else "DOWN"
        lines.append(f"  {probe.name:<16} {mark} {probe.detail}")
    flags = ", ".join(f"{name}={'on' if on else 'off'}" for name, on in sorted(settings.HERMES_FEATURES.items()))
    lines.append(f"  features         {flags}")
    warnings = list(settings.HERMES_CONFIG_WARNINGS)
    warnings += [(f"{p.name} is down: {p.detail}", p.fix) for p in probes if not p.ok]
    for problem, fix in warnings:
        lines.append(f"  warning          {problem} — fix: {fix}")
    if not warnings:
        lines.append("  warnings         none")
    return lines


def print_summary(process: str, stream: Any = None) -> list[Probe]:
    probes = dependency_probes()
    print("\n".join(summary_lines(process, probes)), file=stream or sys.stderr, flush=True)
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
