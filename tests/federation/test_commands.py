"""The operator commands `federation_send` and `federation_dlq`, in process: their refusals name the problem and
change nothing. (The two-instance tests run both against real servers.)"""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.federation import actions
from apps.federation.models import Effect, Message, Outbox, OutboxStatus, Peer
from tests.factories import dead_letter

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def sent(org: Any, peer: Peer) -> list[Message]:
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    ids = run("federation_send", "acme", "globex@berlin", "--count", "2", "--payload", '{"n": {n}}').split()
    return list(Message.objects.for_org(org).filter(id__in=ids).order_by("payload__n"))


def test_send_writes_one_message_per_count_with_its_sequence_number(sent: list[Message]) -> None:
    assert [m.payload for m in sent] == [{"n": 0}, {"n": 1}]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nobody", "globex@berlin"], "No organization 'nobody'."),
        (["acme", "globex@berlin", "--payload", "not json"], "--payload is not JSON"),
        (["acme", "globex@berlin", "--payload", "[1]"], "--payload must be a JSON object"),
        (["acme", "globex@berlin", "--count", "0"], "--count must be at least 1."),
        (["acme", "globex@berlin", "--rate", "-1"], "cannot be negative"),
        (["acme", "bad address"], "is not a federation address"),
        (["acme", "globex@nowhere"], "No peer named 'nowhere'"),
        (["acme", "globex@berlin"], "Federation policy forbids sending to globex@berlin"),
    ],
)
def test_send_refusals_say_why_and_write_nothing(org: Any, peer: Peer, args: list[str], error: str) -> None:
    with pytest.raises(CommandError, match=re.escape(error)):
        run("federation_send", *args)
    assert not Message.objects.for_org(org).exists()


def test_dlq_list_show_requeue_and_discard(org: Any, sent: list[Message]) -> None:
    first, second = (dead_letter(m) for m in sent)
    listing = run("federation_dlq", "list", "--org", "acme")
    assert str(first.message_id) in listing and "HTTP 401: bad signature" in listing
    shown = run("federation_dlq", "show", str(first.message_id))
    document, _ = json.JSONDecoder().raw_decode(shown)  # the message, then one line per delivery attempt
    assert document == {
        "recipient": first.message.recipient,
        "type": "message",
        "last_error": "HTTP 401: bad signature",
        "message": {"n": 0},
    }
    assert "#1" in shown and "permanent" in shown
    assert run("federation_dlq", "requeue", str(first.message_id)) == "requeue: 1 message(s)\n"
    discarded = run("federation_dlq", "discard", "--all", "--org", "acme", "--reason", "obsolete")
    assert discarded == "discard: 1 message(s)\n"
    statuses = dict(Outbox.objects.for_org(org).values_list("message_id", "status"))
    assert statuses[first.message_id] != OutboxStatus.DEAD and statuses[second.message_id] == OutboxStatus.DISCARDED


def test_dlq_refusals_change_nothing(org: Any, sent: list[Message]) -> None:
    dead = dead_letter(sent[0])
    alive = sent[1]
    with pytest.raises(CommandError, match="'abc' is not a message id"):
        run("federation_dlq", "show", "abc")
    with pytest.raises(CommandError, match="show takes exactly one message id"):
        run("federation_dlq", "show")
    with pytest.raises(CommandError, match="not in the dead-letter queue"):
        run("federation_dlq", "show", str(uuid.uuid4()))
    with pytest.raises(CommandError, match="No organization 'nobody'"):
        run("federation_dlq", "list", "--org", "nobody")
    with pytest.raises(CommandError, match="requeue needs message ids or --all"):
        run("federation_dlq", "requeue")
    # One id that is not a dead letter: the dead one named with it is not requeued either.
    with pytest.raises(CommandError, match=f"not in the dead-letter queue: {alive.id}; nothing was requeued"):
        run("federation_dlq", "requeue", str(dead.message_id), str(alive.id))
    dead.refresh_from_db()
    assert dead.status == OutboxStatus.DEAD


def test_peer_command_validates_like_the_api() -> None:
    with pytest.raises(CommandError) as refused:
        run("federation_peer", "add", "Bad Name", "notaurl", "--local-name", "x y")
    assert str(refused.value).startswith("Peer not added: name: Enter a valid “slug”")
    assert "base_url: Enter the peer's base URL" in str(refused.value) and "local_name:" in str(refused.value)
    assert not Peer.objects.exists()
    listing = run("federation_peer", "add", "berlin", "http://127.0.0.1:9/", "--local-name", "paris")
    assert "berlin               active    http://127.0.0.1:9 (we are 'paris' there)" in listing
    with pytest.raises(CommandError, match="A peer named 'berlin' already exists"):
        run("federation_peer", "add", "berlin", "http://127.0.0.1:9", "--local-name", "paris")


def test_send_refuses_a_sender_agent_the_org_does_not_have(org: Any, peer: Peer) -> None:
    actions.set_policy(org=org, remote="*@berlin", effect=Effect.ALLOW)
    with pytest.raises(CommandError, match="acme has no agent 'no-such-agent'"):
        run("federation_send", "acme", "globex@berlin", "--sender-agent", "no-such-agent")
    assert not Message.objects.for_org(org).exists()


def test_peer_command_refuses_one_name_at_both_ends() -> None:
    with pytest.raises(CommandError) as refused:
        run("federation_peer", "add", "gamma", "http://127.0.0.1:9", "--local-name", "gamma")
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("Peer not added: local_name: The peer's name for this instance must differ")
    assert not Peer.objects.exists()


def test_dlq_list_says_when_the_queue_is_empty(org: Any) -> None:
    assert run("federation_dlq", "list") == "The dead-letter queue is empty.\n"
    assert run("federation_dlq", "list", "--org", "acme") == "The dead-letter queue of acme is empty.\n"
