"""Register or change a federation peer (another Hermes instance).

manage.py federation_peer add <name> <base_url> --local-name <our name there>
manage.py federation_peer enable|disable <name>
manage.py federation_peer list
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from apps.core.errors import HermesAPIError
from apps.core.management.base import HermesCommand
from apps.federation import actions
from apps.federation.models import Peer, PeerStatus


class Command(HermesCommand):
    help = "Add, list, enable or disable federation peers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "operation",
            choices=["add", "list", "enable", "disable"],
            help="add a peer, list them, enable or disable one",
        )
        parser.add_argument(
            "name", nargs="?", help="add, enable, disable: the peer's name here (addresses read org@<name>)"
        )
        parser.add_argument("base_url", nargs="?", help="add: the peer's public URL, e.g. https://hermes.example.org")
        parser.add_argument("--local-name", help="add: the name the peer knows this instance by")

    def handle(self, *args: Any, **options: Any) -> None:
        operation, name = options["operation"], options.get("name")
        if operation != "list" and not name:
            raise CommandError(f"{operation} needs a peer name")
        try:
            if operation == "add":
                if not options.get("base_url") or not options.get("local_name"):
                    raise CommandError("add needs <name> <base_url> --local-name <name>")
                added = actions.create_peer(
                    name=str(name), base_url=options["base_url"], local_name=options["local_name"]
                )
                if blocked := actions.delivery_blocked_reason(added):
                    self.stderr.write(f"warning: deliveries to this peer will be refused: {blocked}")
            elif operation in ("enable", "disable"):
                peer = Peer.objects.filter(name=name).first()
                if peer is None:
                    raise CommandError(f"No peer named '{name}'.")
                status = PeerStatus.ACTIVE if operation == "enable" else PeerStatus.DISABLED
                actions.set_peer_status(peer, status)
        except HermesAPIError as exc:
            raise CommandError(str(exc.detail)) from exc
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            raise CommandError(f"Peer not added: {problems}") from exc
        peers = list(Peer.objects.order_by("name"))
        if not peers:
            self.stdout.write(
                "No peers configured. Add one: manage.py federation_peer add <name> <base_url> "
                "--local-name <our name there>"
            )
        for peer in peers:
            self.stdout.write(f"{peer.name:<20} {peer.status:<9} {peer.base_url} (we are '{peer.local_name}' there)")
