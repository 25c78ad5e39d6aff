from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from apps.core.permissions import Access, Role
from apps.federation.models import AttemptOutcome, DeliveryAttempt, Message, Outbox, OutboxStatus
from apps.orgs.models import APIKey, Membership, Organization


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    name = factory.Faker("name")
    password = factory.django.Password("correct-horse-battery")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


def access_for(user: Any, org: Any) -> Access:
    """The Access a signed-in member has in `org` (as the session authentication builds it)."""
    role = Membership.objects.for_org(org).get(user=user).role
    return Access(org=org, role=role, user=user)


def issue_api_key(user: Any, org: Any, scopes: list[str] | None = None, **kwargs: Any) -> tuple[APIKey, str]:
    """Issue a key through the real action; by default with every scope the creator's role allows."""
    from apps.orgs.actions import create_api_key, grantable_scopes

    access = access_for(user, org)
    issued = create_api_key(
        access=access,
        name=kwargs.pop("name", f"key of {user.email}"),
        scopes=scopes if scopes is not None else sorted(grantable_scopes(access)),
        **kwargs,
    )
    return issued.key, issued.plaintext


def key_client(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def dead_letter(message: Message, error: str = "HTTP 401: bad signature") -> Outbox:
    """Put a message in the DLQ the way a permanent failure does (one recorded attempt, then dead)."""
    row = Outbox.objects.for_org(message.organization).get(message=message)
    DeliveryAttempt.objects.create(
        organization=message.organization,
        outbox=row,
        number=1,
        duration_ms=3.0,
        http_status=401,
        error="",
        response_excerpt='{"error": "bad_signature"}',
        outcome=AttemptOutcome.PERMANENT,
    )
    Outbox.objects.for_org(message.organization).filter(pk=row.pk).update(
        status=OutboxStatus.DEAD, attempts=1, last_error=error, dead_at=timezone.now()
    )
    row.refresh_from_db()
    return row
