"""Staff's Django admin: every Hermes model is reachable (registered, or shown inline on its parent), and every
changelist, search and add page, and the change page of a row of each (inline children included), renders for a
superuser."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.agents import actions as agent_actions
from apps.federation import actions as federation_actions
from apps.federation.models import DeliveryAttempt, Message, Outbox, Peer, RemoteTask, RemoteTaskEvent
from apps.tasks import actions as task_actions
from apps.tasks.models import Task
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _hermes_models() -> list[Any]:
    return [m for m in apps.get_models() if m.__module__.startswith("apps.")]


def _inline_models() -> set[Any]:
    return {inline.model for model_admin in admin.site._registry.values() for inline in model_admin.inlines}


def test_every_model_is_in_the_admin() -> None:
    missing = [m._meta.label for m in _hermes_models() if m not in admin.site._registry and m not in _inline_models()]
    assert not missing, f"Register these in their app's admin.py (or inline on a parent): {missing}"


@pytest.fixture
def staff_client(org: Any, alice: Any) -> Client:
    client = Client()
    client.force_login(UserFactory(email="root@hermes.test", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("label", sorted(m._meta.label for m in _hermes_models() if m in admin.site._registry))
def test_admin_pages_render(staff_client: Client, label: str) -> None:
    model = apps.get_model(label)
    model_admin = admin.site._registry[model]
    info = (model._meta.app_label, model._meta.model_name)
    changelist = reverse("admin:{}_{}_changelist".format(*info))
    assert staff_client.get(changelist).status_code == 200
    if model_admin.search_fields:
        assert staff_client.get(changelist, {"q": "acme"}).status_code == 200
    if model_admin.has_add_permission(_request(staff_client)):
        assert staff_client.get(reverse("admin:{}_{}_add".format(*info))).status_code == 200


def _request(client: Client) -> Any:
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = UserFactory(email="root@hermes.test")
    return request


def test_user_admin_shows_memberships_and_hides_the_password(staff_client: Client, alice: Any) -> None:
    page = staff_client.get(reverse("admin:accounts_user_change", args=[alice.pk])).content.decode()
    assert "acme" in page and "owner" in page.lower()
    assert alice.password not in page
    created = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "new@hermes.test",
            "usable_password": "true",
            "password1": "a-long-secret-42",
            "password2": "a-long-secret-42",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert created.status_code == 302, created.context["adminform"].form.errors
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(email="new@hermes.test").check_password("a-long-secret-42")
    # An address that differs only in case is the same person's: refused (it made sign-in a 500 for both), and a
    # new address is stored lowercased like every other way in.
    form = {
        "usable_password": "true", "password1": "a-long-secret-42", "password2": "a-long-secret-42",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }  # fmt: skip
    twin = staff_client.post(reverse("admin:accounts_user_add"), {**form, "email": "New@Hermes.test"})
    assert twin.status_code == 200 and "already exists" in twin.content.decode()
    assert (
        staff_client.post(reverse("admin:accounts_user_add"), {**form, "email": "Other@Hermes.test"}).status_code == 302
    )
    assert get_user_model().objects.filter(email="other@hermes.test").exists()


def test_sign_in_with_case_twins_from_before_the_constraint_is_no_500(db: Any) -> None:
    from django.contrib.auth import authenticate, get_user_model
    from django.db import connection

    users = get_user_model()
    with connection.cursor() as cursor:  # rows an older version could have stored
        cursor.execute("DROP INDEX accounts_user_email_ci_unique")  # (a functional constraint is an index)
    lower = users.objects.create_user("bob@example.test", "pw-lower-123")
    upper = users.objects.create_user("x@example.test", "pw-upper-123")
    users.objects.filter(pk=upper.pk).update(email="Bob@Example.test")
    assert authenticate(username="bob@example.test", password="pw-lower-123") == lower  # the exact spelling
    assert authenticate(username="Bob@Example.test", password="pw-upper-123") == upper
    assert authenticate(username="BOB@example.test", password="pw-lower-123") is None  # ambiguous: refused


@pytest.fixture
def with_inline_rows(org: Any, alice: Any) -> set[Any]:
    """One parent row with children for every admin page that shows org-owned rows inline; returns the parents."""
    agent = agent_actions.register_agent_manually(org=org, name="Runner", url="https://agent.example.com/rpc")
    task_actions.create_task(org=org, agent=agent, message={"role": "user", "parts": [{"kind": "text", "text": "x"}]})
    peer = federation_actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    federation_actions.add_key(peer, secret=b"k" * 32)
    request = Message.objects.create(organization=org, recipient="echo.globex@berlin", peer=peer, type="task_request")
    now = timezone.now()
    outbox = Outbox.objects.create(organization=org, message=request, queued_at=now, next_attempt_at=now)
    DeliveryAttempt.objects.create(organization=org, outbox=outbox, number=1, duration_ms=2.0, outcome="retry")
    remote = RemoteTask.objects.create(organization=org, request=request, agent_address="echo.globex@berlin")
    RemoteTaskEvent.objects.create(organization=org, remote_task=remote, seq=1, kind="state", state="working")
    return {Task, Outbox, RemoteTask, Peer, get_user_model()}


def test_every_change_page_renders_with_its_inline_rows(staff_client: Client, with_inline_rows: set[Any]) -> None:
    shown = set()
    for model, model_admin in admin.site._registry.items():
        if not model.__module__.startswith("apps."):
            continue
        row = model._base_manager.order_by("pk").first()
        if row is None:
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[row.pk])
        response = staff_client.get(url)
        assert response.status_code == 200, url
        shown.add(model)
        for inline in model_admin.inlines:
            # The children exist and the page lists them (their formset got past the tenancy guard).
            if inline.model._base_manager.exists() and model in with_inline_rows:
                assert response.context["inline_admin_formsets"], url
    assert with_inline_rows <= shown


def test_audit_logs_are_read_only_for_staff(staff_client: Client, org: Any) -> None:
    from apps.federation.models import AuditEvent as FederationEventKind
    from apps.federation.models import FederationAuditEvent

    entry = FederationAuditEvent.objects.create(organization=org, event=FederationEventKind.REJECTED, reason="x")
    for path in ("/admin/federation/federationauditevent/", "/admin/core/auditevent/"):
        assert staff_client.get(f"{path}add/").status_code == 403  # there was an "Add" button and form
        changelist = staff_client.get(path).content.decode()
        assert "delete_selected" not in changelist  # nor a bulk delete
    assert (
        staff_client.post(f"/admin/federation/federationauditevent/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert FederationAuditEvent.objects.unscoped("test").filter(pk=entry.pk).exists()


def test_staff_cannot_forge_api_keys_but_can_revoke_one(staff_client: Client, org: Any, alice: Any) -> None:
    """An edited key took scopes no key may hold (org:billing, org:delete) and could move orgs, unaudited; an
    added one had no secret and showed as active. Staff revoke through the audited action only."""
    from apps.core.models import AuditEvent
    from apps.orgs.models import APIKey
    from tests.factories import issue_api_key, key_client

    key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    base = "/admin/orgs/apikey/"
    assert staff_client.get(f"{base}add/").status_code == 403
    forged = {"name": key.name, "scopes": '["org:read", "org:delete"]', "organization": org.pk}
    assert staff_client.post(f"{base}{key.pk}/change/", forged).status_code == 403
    assert staff_client.get(f"{base}{key.pk}/change/").status_code == 200  # still readable
    assert staff_client.get("/admin/orgs/invitation/add/").status_code == 403
    revoked = staff_client.post(base, {"action": "revoke_selected", "_selected_action": [key.pk]}, follow=True)
    assert "Revoked 1 key(s)" in revoked.content.decode()
    assert APIKey.objects.for_org(org).get(pk=key.pk).scopes == ["org:read"]
    assert key_client(plaintext).get("/api/v1/me").status_code == 401
    event = AuditEvent.objects.get(org_id=org.pk, action="api_key.revoked")
    assert event.actor is not None and event.actor.is_staff and event.details.get("by_staff") is True


# --- Memberships, slugs and refused saves ----------------------------------------------------------------------


def _membership(org: Any, user: Any) -> Any:
    from apps.orgs.models import Membership

    return Membership.objects.for_org(org).get(user=user)


def test_staff_cannot_demote_or_remove_an_orgs_last_owner(staff_client: Client, org: Any, alice: Any) -> None:
    """The admin saved what the console and the API refuse (409 last_owner): an org left without an owner."""
    from django.contrib.admin.models import LogEntry

    from apps.core.models import AuditEvent

    owner = _membership(org, alice)
    base = "/admin/orgs/membership/"
    demoted = staff_client.post(f"{base}{owner.pk}/change/", {"role": "admin"}, follow=True).content.decode()
    assert "Not saved: An organization must keep at least one owner" in demoted
    assert "was changed successfully" not in demoted  # only the refusal is said
    removed = staff_client.post(f"{base}{owner.pk}/delete/", {"post": "yes"}, follow=True).content.decode()
    assert "Not deleted: An organization must keep at least one owner" in removed
    assert "deleted successfully" not in removed
    bulk = {"action": "remove_selected", "_selected_action": [owner.pk]}
    listed = staff_client.post(base, bulk, follow=True).content.decode()
    assert "An organization must keep at least one owner" in listed and "Removed 0 of 1 member(s)." in listed
    assert "delete_selected" not in staff_client.get(base).content.decode()  # Django's bulk delete skipped the rule
    assert _membership(org, alice).role == "owner"
    assert not AuditEvent.objects.filter(org_id=org.pk, action__startswith="member.").exists()
    assert not LogEntry.objects.filter(object_id=str(owner.pk)).exists()  # nothing saved, not even the history


def test_staff_membership_changes_are_audited(
    staff_client: Client, org: Any, alice: Any, bob: Any, mia: Any, dave: Any
) -> None:
    from apps.core.models import AuditEvent

    base = "/admin/orgs/membership/"
    page = staff_client.get(f"{base}{_membership(org, bob).pk}/change/").content.decode()
    # A membership is one person in one org: staff change its role or remove it, not move it.
    assert 'name="role"' in page and 'name="user"' not in page and 'name="organization"' not in page
    changed = staff_client.post(f"{base}{_membership(org, bob).pk}/change/", {"role": "owner"}, follow=True)
    assert "was changed successfully" in changed.content.decode()
    # With two owners, one of them may go.
    staff_client.post(f"{base}{_membership(org, alice).pk}/change/", {"role": "developer"})
    staff_client.post(f"{base}{_membership(org, mia).pk}/delete/", {"post": "yes"})
    bulk = {"action": "remove_selected", "_selected_action": [_membership(org, dave).pk]}
    assert "Removed 1 of 1 member(s)." in staff_client.post(base, bulk, follow=True).content.decode()
    changes = AuditEvent.objects.filter(org_id=org.pk, action="member.role_changed")
    roles = dict(changes.values_list("details__email", "details__role"))
    assert roles == {"bob@acme.test": ["admin", "owner"], "alice@acme.test": ["owner", "developer"]}
    removed = AuditEvent.objects.filter(org_id=org.pk, action="member.removed")
    assert sorted(removed.values_list("details__email", flat=True)) == ["dave@acme.test", "mia@acme.test"]
    events = AuditEvent.objects.filter(org_id=org.pk, action__startswith="member.")
    assert {event.actor.email for event in events if event.actor} == {"root@hermes.test"} and events.count() == 4


def test_the_membership_list_names_people_and_orgs(staff_client: Client, org: Any, alice: Any) -> None:
    listed = staff_client.get("/admin/orgs/membership/").content.decode()
    assert "alice@acme.test @ acme : owner" in listed  # was "<user id>@<org id>:owner"
    assert "alice@acme.test @ acme" in staff_client.get("/admin/orgs/membership/", {"q": "acme"}).content.decode()


def test_slugs_that_federation_names_are_fixed_in_the_admin(staff_client: Client, org: Any, alice: Any) -> None:
    """A changed org or agent slug silently broke other orgs' policies and addresses (acme, echo.acme@paris)."""
    from apps.agents.models import Agent

    page = staff_client.get(f"/admin/orgs/organization/{org.pk}/change/").content.decode()
    assert 'name="slug"' not in page and 'name="name"' in page
    form = {"name": "Acme Inc", "slug": "acme2", "plan": org.plan, "created_by": alice.pk}
    saved = staff_client.post(f"/admin/orgs/organization/{org.pk}/change/", form)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    org.refresh_from_db()
    assert (org.name, org.slug) == ("Acme Inc", "acme")
    # Set once, when a person creates the org in the console or the API (staff do not add orgs).
    assert staff_client.get("/admin/orgs/organization/add/").status_code == 403

    agent = agent_actions.register_agent_manually(org=org, name="Echo", url="https://echo.example.com/rpc")
    url = f"/admin/agents/agent/{agent.pk}/change/"
    assert 'name="slug"' not in staff_client.get(url).content.decode()
    form = {"name": "Echo 2", "slug": "renamed", "description": "", "visibility": agent.visibility}
    assert staff_client.post(url, form).status_code == 302
    agent = Agent.objects.for_org(org).get(pk=agent.pk)
    assert (agent.name, agent.slug) == ("Echo 2", "echo")


def test_a_refused_agent_change_says_only_why(staff_client: Client, org: Any) -> None:
    """A federated agent made public showed "Not saved: …" and Django's "was changed successfully" together."""
    from django.contrib.admin.models import LogEntry

    from apps.agents.models import Agent

    remote = agent_actions.federated_agent(org, "echo.globex@berlin")
    form = {"name": "Renamed", "description": "", "visibility": "public"}
    page = staff_client.post(f"/admin/agents/agent/{remote.pk}/change/", form, follow=True).content.decode()
    assert "Not saved: An agent reached through federation keeps its address and stays private." in page
    assert "was changed successfully" not in page
    remote = Agent.objects.for_org(org).get(pk=remote.pk)
    assert (remote.name, remote.visibility) != ("Renamed", "public") and remote.visibility == "private"
    assert not LogEntry.objects.filter(object_id=str(remote.pk)).exists()


def test_staff_changes_to_an_organization_are_audited(staff_client: Client, org: Any, alice: Any) -> None:
    # A plan changed in the admin left no trace in the org's audit log (the API's change writes org.updated).
    from apps.core.models import AuditEvent

    url = f"/admin/orgs/organization/{org.pk}/change/"
    form = {"name": "Acme Renamed", "plan": "team", "created_by": alice.pk}
    assert "was changed successfully" in staff_client.post(url, form, follow=True).content.decode()
    row = AuditEvent.objects.get(org_id=org.pk, action="org.updated")
    assert row.actor.email == "root@hermes.test"
    assert row.details["changes"]["name"] == ["Acme", "Acme Renamed"]
    assert row.details["changes"]["plan"][1] == "team"
    assert "delete_selected" not in staff_client.get("/admin/orgs/organization/").content.decode()
