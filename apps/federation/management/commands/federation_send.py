"""Send federation messages from the command line (smoke tests, scripted traffic, load generation).

    manage.py federation_send <org> <recipient> [--type message] [--payload '{"text": "hi"}'] [--count N]
                              [--interval S | --rate N] [--sender-agent slug]

Prints one message id per line. Goes through the same action as the API (policy, outbox, audit).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.core import jsonutil
from apps.core.errors import HermesAPIError
from apps.core.management.base import HermesCommand
from apps.federation import actions
from apps.federation.models import MessageType
from apps.orgs.models import Organization


class Command(HermesCommand):
    help = "Send one or more federation messages as an org."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("org", help="sending org slug")
        parser.add_argument("recipient", help="address: org, agent.org, org@peer or agent.org@peer")
        # Not limited by argparse `choices`: a protocol type gets the action's refusal, which says where to go.
        parser.add_argument("--type", default=MessageType.MESSAGE, help="only 'message' (tasks: remote tasks)")
        parser.add_argument("--payload", default="{}", help="a JSON object; {n} is replaced by the sequence number")
        parser.add_argument("--count", type=int, default=1, help="how many messages to send (default 1)")
        parser.add_argument("--interval", type=float, default=0.0, help="seconds between messages")
        parser.add_argument(
            "--rate", type=float, default=0.0, help="messages per second on a fixed schedule (overrides --interval)"
        )
        parser.add_argument(
            "--sender-agent",
            default="",
            help="slug of the org's agent to send as; its policy rules apply (default: the org itself)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["count"] < 1:
            raise CommandError("--count must be at least 1.")
        if options["rate"] < 0 or options["interval"] < 0:
            raise CommandError("--rate and --interval cannot be negative.")
        try:
            actions.check_user_message_type(options["type"])
        except HermesAPIError as exc:
            raise CommandError(str(exc.detail)) from exc
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organization '{options['org']}'.")
        started = time.monotonic()
        for n in range(options["count"]):
            if options["rate"]:
                # A fixed schedule (not sleep-after-send), so the rate holds however long each send takes.
                delay = started + n / options["rate"] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                payload = jsonutil.loads(options["payload"].replace("{n}", str(n)))
            except ValueError as exc:
                raise CommandError(f"--payload is not JSON: {exc}") from exc
            if not isinstance(payload, dict):
                raise CommandError("--payload must be a JSON object")
            try:
                message = actions.send_message(
                    org=org,
                    recipient=options["recipient"],
                    payload=payload,
                    type=options["type"],
                    sender_agent=options["sender_agent"],
                )
            except HermesAPIError as exc:
                raise CommandError(str(exc.detail)) from exc
            self.stdout.write(str(message.id))
            self.stdout.flush()
            if options["interval"] and not options["rate"] and n + 1 < options["count"]:
                time.sleep(options["interval"])
