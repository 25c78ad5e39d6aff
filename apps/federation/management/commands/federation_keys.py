"""Rotate a federation link's signing keys without downtime (runbook: docs/federation.md).

manage.py federation_keys list    <peer>
manage.py federation_keys add     <peer> [--secret whsec_...]   # K_n+1: both sides add the SAME secret
manage.py federation_keys promote <peer>                        # K_n+1 becomes current, K_n keeps verifying
manage.py federation_keys retire  <peer> [--key-version N]      # K_n never signs or verifies again
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.core.errors import HermesAPIError
from apps.core.management.base import HermesCommand
from apps.federation import actions
from apps.federation.models import LinkKey, Peer
from apps.federation.signing import decode_secret, encode_secret


class Command(HermesCommand):
    help = "List, add, promote and retire the HMAC keys of a federation link."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "operation",
            choices=["list", "add", "promote", "retire"],
            help="list the link's keys, add the next one, promote it to current, or retire the previous one",
        )
        parser.add_argument("peer", help="the peer's name on this instance")
        parser.add_argument("--secret", help="add: the whsec_ secret the other side generated (default: generate)")
        parser.add_argument(
            "--key-version", dest="key_version", type=int, help="retire: a specific key version (default: the previous)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        peer = Peer.objects.filter(name=options["peer"]).first()
        if peer is None:
            raise CommandError(
                f"No peer named '{options['peer']}'. Known: {', '.join(p.name for p in Peer.objects.all()) or 'none'}."
            )
        operation = options["operation"]
        try:
            if operation == "add":
                secret = decode_secret(options["secret"]) if options.get("secret") else None
                key = actions.add_key(peer, secret=secret)
                self.stdout.write(f"added k{key.version} ({key.state}), fingerprint {key.fingerprint}")
                if secret is None:
                    self.stdout.write(
                        f"secret (shown once; give it to the operator of '{peer.name}'): {encode_secret(key.secret())}"
                    )
            elif operation == "promote":
                key = actions.promote_key(peer)
                self.stdout.write(f"k{key.version} is now current (fingerprint {key.fingerprint})")
            elif operation == "retire":
                key = actions.retire_key(peer, version=options.get("key_version"))
                self.stdout.write(f"k{key.version} retired")
        except (HermesAPIError, ValueError) as exc:
            raise CommandError(str(exc.detail if isinstance(exc, HermesAPIError) else exc)) from exc
        for key in LinkKey.objects.filter(peer=peer).order_by("version"):
            self.stdout.write(f"  k{key.version:<3} {key.state:<9} fingerprint {key.fingerprint}")
