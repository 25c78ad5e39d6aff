"""Every state change of orgs and memberships."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.core.permissions import Role
from apps.orgs.models import Membership, Organization


@transaction.atomic
def create_organization(*, user: Any, name: str, slug: str) -> Organization:
    org = Organization.objects.create(name=name, slug=slug, created_by=user)
    Membership.objects.create(organization=org, user=user, role=Role.OWNER)
    return org
