"""Every argument of every Hermes command says what it is in `--help` (federation_send's --count and
--sender-agent, federation_peer's name and base_url, the operations of federation_dlq/keys/peer had none)."""

from __future__ import annotations

import pytest
from django.core.management import get_commands, load_command_class

HERMES_COMMANDS = sorted((name, app) for name, app in get_commands().items() if app.startswith("apps."))


@pytest.mark.parametrize(("name", "app"), HERMES_COMMANDS, ids=[name for name, _ in HERMES_COMMANDS])
def test_every_argument_has_help(name: str, app: str) -> None:
    parser = load_command_class(app, name).create_parser("manage.py", name)
    undocumented = [action.dest for action in parser._actions if not action.help]
    assert not undocumented, f"manage.py {name}: no help for {undocumented}"
