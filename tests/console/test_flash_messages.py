"""Flash messages belong to the page or the action they were queued for (apps.core.console.render_console): a
fragment read with GET (a live refresh, a poll, a filter) neither shows nor uses them up, since the session and
its messages are shared by every open tab."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import actions as agent_actions
from tests.console.conftest import HX, main_html

pytestmark = pytest.mark.django_db


@pytest.fixture
def echo(org: Any) -> Any:
    return agent_actions.register_agent_manually(org=org, name="Hermes Echo", url="https://agent.example.com/rpc")


def test_live_fragments_leave_another_tabs_flash_message_for_its_page(as_user: Any, alice: Any, echo: Any) -> None:
    client = as_user(alice)
    sent = client.post("/tasks/new/", {"agent": str(echo.pk), "text": "hello", "structured": ""})
    assert sent.status_code == 302
    # Before the sending tab loads the task's page, another tab's task list refreshes live, the outbox polls, a
    # filter changes: none of them shows the message.
    for path in ("/tasks/", "/tasks/?status=working", "/federation/outbox/?status="):
        fragment = client.get(path, **HX)
        assert fragment.status_code == 200
        html = fragment.content.decode()
        assert "Task sent to" not in html and "hx-swap-oob" not in html, path
    # The page it was queued for still has it, once.
    assert "Task sent to Hermes Echo." in main_html(client.get(sent["Location"]))
    assert "Task sent to" not in main_html(client.get(sent["Location"]))


def test_an_actions_fragment_still_carries_its_flash_message(as_user: Any, alice: Any) -> None:
    response = as_user(alice).post("/org/invitations/", {"email": "ned@example.test", "role": "member"}, **HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert (
        'id="messages"' in html and 'hx-swap-oob="innerHTML"' in html and "Invitation sent to ned@example.test" in html
    )


def test_the_invitation_flash_names_the_role_by_its_label(as_user: Any, alice: Any) -> None:
    response = as_user(alice).post("/org/invitations/", {"email": "ned@example.test", "role": "admin"}, **HX)
    assert "Invitation sent to ned@example.test as Admin." in response.content.decode()


def messages_swapped_in(response: Any) -> str:
    """What the answer's out-of-band swap puts in the page's #messages region (it must be there)."""
    html = response.content.decode()
    assert html.count('id="messages"') == 1 and 'hx-swap-oob="innerHTML"' in html
    return html.split('id="messages"', 1)[1].split(">", 1)[1].rsplit("</div>", 1)[0].strip()


@pytest.mark.parametrize(
    ("url", "accepted", "refused", "flash"),
    [
        (
            "/org/invitations/",
            {"email": "yan@qa.test", "role": "member"},
            {"email": "mia@acme.test", "role": "member"},  # already a member
            "Invitation sent to yan@qa.test",
        ),
        (
            "/federation/contacts/",
            {"name": "Globex", "address": "globex@berlin"},
            {"name": "Bad", "address": "Not An Address!"},
            "Globex",
        ),
    ],
)
def test_a_refused_form_takes_the_previous_actions_flash_away(
    as_user: Any, alice: Any, mia: Any, url: str, accepted: dict[str, str], refused: dict[str, str], flash: str
) -> None:
    """The 422 answer said nothing to #messages, so "Invitation sent to yan@…" stayed above "already a member"."""
    client = as_user(alice)
    done = client.post(url, accepted, **HX)
    assert done.status_code == 200 and flash in messages_swapped_in(done)
    error = client.post(url, refused, **HX)
    assert error.status_code == 422
    assert messages_swapped_in(error) == ""
