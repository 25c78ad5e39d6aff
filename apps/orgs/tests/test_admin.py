"""The API key admin: staff revoke keys only with the permission to change them, not with the one to view them."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from apps.core.models import AuditEvent
from apps.orgs.models import APIKey
from tests.factories import UserFactory, issue_api_key, key_client

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/orgs/apikey/"


def _staff(*codenames: str) -> Client:
    user = UserFactory(email=f"staff-{'-'.join(codenames)}@hermes.test", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="orgs", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_staff_who_may_only_view_keys_cannot_revoke_them(org: Any, alice: Any, charlie: Any, other_org: Any) -> None:
    """`orgs.view_apikey` was enough to run "Revoke selected API keys" on any org's keys."""
    key, plaintext = issue_api_key(charlie, other_org, scopes=["org:read"])
    viewer = _staff("view_apikey")
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200 and "revoke_selected" not in page.content.decode()  # not offered
    forced = viewer.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [key.pk]}, follow=True)
    assert "Revoked 1 key(s)" not in forced.content.decode()  # and refused when posted anyway
    assert APIKey.objects.for_org(other_org).get(pk=key.pk).revoked_at is None
    assert key_client(plaintext).get("/api/v1/me").status_code == 200
    assert not AuditEvent.objects.filter(action="api_key.revoked").exists()


def test_staff_who_may_change_keys_revoke_them_through_the_audited_action(org: Any, alice: Any) -> None:
    key, plaintext = issue_api_key(alice, org, scopes=["org:read"])
    changer = _staff("view_apikey", "change_apikey")
    assert "revoke_selected" in changer.get(CHANGELIST).content.decode()
    revoked = changer.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [key.pk]}, follow=True)
    assert "Revoked 1 key(s)" in revoked.content.decode()
    assert key_client(plaintext).get("/api/v1/me").status_code == 401
    assert AuditEvent.objects.get(org_id=org.pk, action="api_key.revoked").details.get("by_staff") is True
    # The admin stays read-only for them: the change permission buys the audited revoke, not an edit form.
    edit = changer.post(f"{CHANGELIST}{key.pk}/change/", {"name": "renamed", "organization": org.pk})
    assert edit.status_code == 403
