"""In the browser (static/js/hermes.js): what was typed in a form refused because another tab switched org stays
with the org it was typed for; an error toast's text beyond Latin-1; a refusal toast clears the previous success
message; the dead-letter queue asks to confirm only with a selection."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_console_flow import _in_both_orgs, _switch_in_another_tab, sign_in

pytestmark = pytest.mark.e2e


def _working_in(page: Any, slug: str) -> None:
    page.locator("#org-switcher").select_option(slug)
    with page.expect_navigation():
        page.get_by_role("button", name="Switch").click()


def test_a_name_typed_for_one_org_is_not_put_into_the_other_orgs_settings(
    page: Any, org: Any, other_org: Any, alice: Any
) -> None:
    from apps.orgs.models import Membership, Organization

    Membership.objects.create(organization=other_org, user=alice, role="owner")
    sign_in(page, alice.email)
    _working_in(page, "acme")
    page.goto("/org/settings/")
    page.get_by_label("Name").fill("Acme Renamed")
    _switch_in_another_tab(page, "globex")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    # Refused, back on the settings page, now globex's: its own name, not the one typed for acme.
    refusal = page.locator("#messages [data-refused-post]")
    assert "Nothing was done" in refusal.inner_text()
    assert page.locator("#org-switcher option:checked").inner_text().startswith("Globex")
    assert page.get_by_label("Name").input_value() == "Globex"
    assert (
        "What you typed here is kept for Acme: switch back to it" in refusal.inner_text()
    )  # its name, as the switcher
    # Reloaded, still globex's own; the draft waits for acme.
    page.reload()
    assert page.get_by_label("Name").input_value() == "Globex"
    # Back in acme (as the refusal suggests): the same page, with what was typed for it.
    _working_in(page, "acme")
    assert page.url.endswith("/org/settings/")
    assert page.get_by_label("Name").input_value() == "Acme Renamed"
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    assert "Settings saved." in page.locator("#messages").inner_text()
    assert {o.slug: o.name for o in Organization.objects.all()} == {"acme": "Acme Renamed", "globex": "Globex"}
    # Saved: nothing more to fill in, in either org.
    page.reload()
    assert page.get_by_label("Name").input_value() == "Acme Renamed"
    _working_in(page, "globex")
    assert page.get_by_label("Name").input_value() == "Globex"


def test_a_message_refused_after_an_org_switch_waits_for_its_org(
    page: Any, org: Any, other_org: Any, alice: Any
) -> None:
    from apps.tasks.models import Task

    echoes = _in_both_orgs(alice, org, other_org)
    sign_in(page, alice.email)
    _working_in(page, "acme")
    page.goto("/tasks/new/")
    page.get_by_label("Agent").select_option(str(echoes["acme"].pk))
    page.get_by_label("Message").fill("Meant for Acme's agent")
    _switch_in_another_tab(page, "globex")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    # globex's "Send a task": its form as it comes, not acme's message (one more Send sent it in globex).
    assert "Nothing was done" in page.locator("#messages").inner_text()
    assert page.get_by_label("Message").input_value() == ""
    assert page.get_by_label("Agent").input_value() == ""
    _working_in(page, "acme")
    assert page.url.endswith("/tasks/new/")
    assert page.get_by_label("Message").input_value() == "Meant for Acme's agent"
    assert page.get_by_label("Agent").input_value() == str(echoes["acme"].pk)
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/tasks/*/")
    assert Task.objects.for_org(org).get().input["parts"][0]["text"] == "Meant for Acme's agent"
    assert not Task.objects.for_org(other_org).exists()


def test_an_error_toast_shows_text_beyond_latin_1(page: Any, org: Any, alice: Any) -> None:
    from apps.orgs.models import Membership
    from tests.factories import OrganizationFactory

    beta = OrganizationFactory(slug="beta", name="Beta 東京 “Labs”…")
    Membership.objects.create(organization=beta, user=alice, role="owner")
    sign_in(page, alice.email)
    _working_in(page, "acme")
    page.goto("/tasks/")
    _switch_in_another_tab(page, "beta")
    page.get_by_label("Status").select_option("working")  # an htmx read from acme's page: refused, as a toast
    toast = page.locator("#toasts [role=alert]")
    toast.wait_for()
    assert "you have switched to Beta 東京 “Labs”… since" in toast.inner_text()
    assert "?" not in toast.inner_text()


def test_a_refusal_toast_clears_the_previous_success_message(page: Any, org: Any, alice: Any, bob: Any) -> None:
    from apps.orgs.models import Membership

    sign_in(page, alice.email)
    page.goto("/org/members/")
    theirs, own = (Membership.objects.for_org(org).get(user=u) for u in (bob, alice))
    page.locator(f"#role-{theirs.pk}").select_option("developer")
    page.locator(f"#member-{theirs.pk}").get_by_role("button", name="Change role").click()
    page.locator("#messages", has_text="bob@acme.test is now Developer.").wait_for()
    # The only owner demoting herself: a 409, as a toast; the green message above was about something else.
    page.locator(f"#role-{own.pk}").select_option("member")
    page.locator(f"#member-{own.pk}").get_by_role("button", name="Change role").click()
    page.locator("#toasts [role=alert]", has_text="at least one owner").wait_for()
    assert page.locator("#messages").inner_text().strip() == ""


def test_the_dead_letter_queue_asks_only_with_a_selection(
    page: Any, org: Any, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.federation import actions
    from tests.console.test_federation_pages import dead_letter

    # The delivery this test process would enqueue (the e2e server's worker would race it for the row).
    monkeypatch.setattr(actions, "_enqueue", lambda *args, **kwargs: None)
    peer = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(peer, secret=b"k1" * 16)
    dead_letter(org, peer)
    sign_in(page, alice.email)
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.goto("/federation/dlq/")
    for button in ("Requeue selected", "Discard selected"):
        page.get_by_role("button", name=button).click()
        page.locator("#messages", has_text="Select at least one message first.").wait_for()
        page.evaluate("document.getElementById('messages').textContent = ''")
    assert asked == []
    # With a message ticked, the question comes first (dismissed: nothing sent).
    page.locator("[data-dead-letter]").get_by_role("checkbox").check()
    page.get_by_role("button", name="Requeue selected").click()
    page.wait_for_timeout(300)
    assert asked == ["Requeue the selected messages for delivery?"]
    assert page.locator("[data-dead-letter]").count() == 1
