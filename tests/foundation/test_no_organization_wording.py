"""403 `no_organization` says what a person can do: pick an org when they have some, else create or be invited
(told to "pick an organization", a person removed from their only org had none to pick)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.permissions import Access
from apps.orgs import actions as org_actions
from apps.orgs.models import Membership
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NO_ORG = "You belong to no organization: create one, or ask an owner to invite you."


def test_a_person_removed_from_their_only_org_is_told_they_have_none(
    client_for: Any, org: Any, alice: Any, mia: Any
) -> None:
    client = client_for(mia)
    assert client.get("/api/v1/agents").status_code == 200
    membership = Membership.objects.for_org(org).get(user=mia)
    org_actions.remove_member(access=Access(org=org, role="owner", user=alice), membership=membership)
    response = client.get("/api/v1/agents")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_organization"
    assert response.json()["error"]["message"] == NO_ORG
    # A person who never had an org hears the same.
    fresh = client_for(UserFactory(email="new@hermes.test")).get("/api/v1/agents")
    assert (fresh.status_code, fresh.json()["error"]["message"]) == (403, NO_ORG)


def test_a_person_with_orgs_is_told_to_pick_one(alice: Any) -> None:
    from tests.foundation.test_api_base import call  # a request with no Access, from a member of an org

    error = call("list", alice, None).data["error"]
    assert error["code"] == "no_organization"
    assert error["message"] == "No organization selected: use an API key, or pick an organization in the console first."
