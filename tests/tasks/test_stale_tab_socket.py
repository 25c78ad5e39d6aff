"""A task page left open in one tab while another tab switched the session's org: its timeline socket reconnects
(a network blip, a server restart) for the org switched to (apps.tasks.consumers, 4409 `org_switched`).

alice owns acme (the task's org) and is a developer in globex; charlie is in globex only."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from apps.orgs.models import Membership
from tests.factories import issue_api_key
from tests.tasks.test_consumers import APP, receive_until
from tests.tasks.wsclient import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user: Any, switched_to: str | None = None) -> list[tuple[bytes, bytes]]:
    """The cookie of `user`'s session, after the header's switcher chose `switched_to` (in some other tab)."""
    client = Client()
    client.force_login(user)
    if switched_to is not None:
        assert client.post("/orgs/switch/", {"org": switched_to}).status_code == 302
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


@pytest.fixture
def alice_in_globex(alice: Any, other_org: Any) -> Any:
    Membership.objects.create(organization=other_org, user=alice, role="developer")
    return alice


def test_a_reconnect_after_an_org_switch_says_so_instead_of_not_found(alice_in_globex: Any, task: Any) -> None:
    cookie = session_cookie(alice_in_globex, switched_to="globex")

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?after=1", headers=cookie)
        assert await ws.connect() == (True, None)  # accepted, to say why before the close
        refused = await ws.receive_json_from()
        assert refused == {
            "type": "refused",
            "code": 4409,
            "reason": "org_switched",
            "message": "Live updates stopped: this page belongs to the organization Acme, but you have switched to "
            "Globex since (in another tab). Reload the page to switch back to Acme and follow this task live.",
        }
        assert await ws.closed() == (4409, "org_switched")

    async_to_sync(scenario)()


def test_switched_back_the_reconnect_resumes_after_the_last_event_shown(alice_in_globex: Any, task: Any) -> None:
    cookie = session_cookie(alice_in_globex, switched_to="acme")

    async def scenario() -> None:
        ws = WebsocketCommunicator(APP, f"/ws/tasks/{task.pk}/?after=1", headers=cookie)
        assert (await ws.connect())[0]
        frames = await receive_until(ws, lambda f: f["type"] == "synced")
        assert [f["event"]["seq"] for f in frames if f["type"] == "event"] == [2]
        await ws.disconnect()

    async_to_sync(scenario)()


def test_nobody_else_learns_that_the_task_exists(alice_in_globex: Any, charlie: Any, other_org: Any, task: Any) -> None:
    """A stranger's session, and an API key of an org the task is not in (even one of alice's: a key belongs to
    its org alone), get the 404 of a task that does not exist, with nothing said before it."""
    _key, plaintext = issue_api_key(alice_in_globex, other_org, ["tasks:read"])
    sockets = {
        "charlie": (f"/ws/tasks/{task.pk}/", session_cookie(charlie)),
        "alice's globex key": (f"/ws/tasks/{task.pk}/?api_key={plaintext}", []),
        "no such task": ("/ws/tasks/00000000-0000-4000-8000-000000000000/", session_cookie(alice_in_globex, "globex")),
    }

    async def scenario() -> None:
        for who, (path, headers) in sockets.items():
            ws = WebsocketCommunicator(APP, path, headers=headers)
            assert await ws.connect() == (False, 4404), who
            assert ws.close_reason == "not_found", who

    async_to_sync(scenario)()
