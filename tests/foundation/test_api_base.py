"""The DRF base classes on a throwaway viewset over an org-owned model (memberships)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import mixins, serializers
from rest_framework.test import APIRequestFactory, force_authenticate

from apps.core.api import OrgScopedViewSet
from apps.core.errors import Conflict
from apps.core.permissions import Access
from apps.orgs.models import Membership


class MembershipSerializer(serializers.ModelSerializer):
    class Meta:
        model = Membership
        fields = ["id", "role"]


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, OrgScopedViewSet):
    model = Membership
    serializer_class = MembershipSerializer
    read_action = "org:read"
    write_action = "org:admin"

    def perform_create(self, serializer: Any) -> None:
        raise Conflict("already there", details={"role": ["taken"]})


factory = APIRequestFactory()


def call(action: str, user: Any, access: Access | None, method: str = "get", pk: int | None = None, **data: Any) -> Any:
    request = getattr(factory, method)("/x", data, format="json")
    force_authenticate(request, user=user, token=access)
    view = MembershipViewSet.as_view({"get": action} if method == "get" else {"post": action})
    return view(request, pk=pk) if pk else view(request)


@pytest.mark.django_db
def test_lists_only_the_callers_org(org: Any, alice: Any, charlie: Any) -> None:
    response = call("list", alice, Access(org=org, role="owner", user=alice))
    assert response.status_code == 200
    assert [row["role"] for row in response.data["results"]] == ["owner"]


@pytest.mark.django_db
def test_other_org_id_is_a_404(org: Any, alice: Any, charlie: Any) -> None:
    theirs = Membership.objects.unscoped("test").get(user=charlie)
    response = call("retrieve", alice, Access(org=org, role="owner", user=alice), pk=theirs.pk)
    assert response.status_code == 404
    assert response.data == {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


@pytest.mark.django_db
def test_missing_scope_and_role_are_named(org: Any, alice: Any, mia: Any) -> None:
    key = Access(org=org, role="owner", user=alice, scopes=frozenset({"tasks:read"}))
    response = call("list", alice, key)
    assert response.status_code == 403
    assert response.data["error"]["code"] == "missing_scope"
    assert response.data["error"]["details"] == {"required_scope": "org:read"}
    response = call("create", mia, Access(org=org, role="member", user=mia), method="post", role="owner")
    assert response.status_code == 403 and response.data["error"]["code"] == "role_forbidden"


@pytest.mark.django_db
def test_no_org_and_anonymous(org: Any, alice: Any) -> None:
    assert call("list", alice, None).data["error"]["code"] == "no_organization"
    # 401, not 403: the API-key authentication (first in the list) answers with a Bearer challenge.
    assert call("list", None, None).status_code == 401


@pytest.mark.django_db
def test_hermes_errors_keep_their_code_and_details(org: Any, alice: Any) -> None:
    response = call("create", alice, Access(org=org, role="owner", user=alice), method="post", role="owner")
    assert response.status_code == 409
    assert response.data == {"error": {"code": "conflict", "message": "already there", "details": {"role": ["taken"]}}}


@pytest.mark.django_db
def test_session_authentication_resolves_the_current_org(client: Any, org: Any, alice: Any) -> None:
    from apps.orgs.auth import SessionOrgAuthentication
    from apps.orgs.selectors import SESSION_ORG_KEY

    client.force_login(alice)
    session = client.session
    session[SESSION_ORG_KEY] = org.pk
    session.save()
    request = factory.get("/x", HTTP_X_HERMES_ORG="acme")
    request.session = client.session
    request.user = alice
    request._dont_enforce_csrf_checks = True
    from rest_framework.request import Request

    user, access = SessionOrgAuthentication().authenticate(Request(request))
    assert user == alice and access.org == org and access.role == "owner"
