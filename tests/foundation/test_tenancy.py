from __future__ import annotations

from typing import Any

import pytest

from apps.core.tenancy import UnscopedQueryError
from apps.orgs.models import Membership


@pytest.mark.django_db
def test_unscoped_reads_are_refused(alice: Any, charlie: Any) -> None:
    with pytest.raises(UnscopedQueryError, match="for_org"):
        list(Membership.objects.all())
    with pytest.raises(UnscopedQueryError):
        Membership.objects.count()
    with pytest.raises(UnscopedQueryError):
        Membership.objects.filter(role="owner").exists()
    with pytest.raises(UnscopedQueryError):
        Membership.objects.update(role="member")


@pytest.mark.django_db
def test_scoped_reads_see_only_their_org(org: Any, alice: Any, charlie: Any) -> None:
    mine = Membership.objects.for_org(org)
    assert [m.user for m in mine] == [alice]
    assert Membership.objects.filter(organization=org).count() == 1
    assert Membership.objects.unscoped("test").count() == 2


@pytest.mark.django_db
def test_related_access_from_a_loaded_row_is_scoped(alice: Any) -> None:
    assert alice.memberships.count() == 1
