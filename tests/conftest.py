"""Shared fixtures: people per role in one org (alice owner, bob admin, dave developer, mia member) and
charlie, the owner of another org, for isolation tests."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.core.permissions import Role
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


@pytest.fixture
def org(db: Any) -> Any:
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def other_org(db: Any) -> Any:
    return OrganizationFactory(slug="globex", name="Globex")


def _member(org: Any, email: str, role: str) -> Any:
    user = UserFactory(email=email)
    MembershipFactory(organization=org, user=user, role=role)
    return user


@pytest.fixture
def alice(org: Any) -> Any:
    return _member(org, "alice@acme.test", Role.OWNER)


@pytest.fixture
def bob(org: Any) -> Any:
    return _member(org, "bob@acme.test", Role.ADMIN)


@pytest.fixture
def dave(org: Any) -> Any:
    return _member(org, "dave@acme.test", Role.DEVELOPER)


@pytest.fixture
def mia(org: Any) -> Any:
    return _member(org, "mia@acme.test", Role.MEMBER)


@pytest.fixture
def charlie(other_org: Any) -> Any:
    return _member(other_org, "charlie@globex.test", Role.OWNER)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Any:
    """A session-authenticated API client for a user."""

    def make(user: Any) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=None)
        client.force_login(user)
        return client

    return make


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port


@pytest.fixture(autouse=True)
def private_quota_namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Quota counters of each test live under their own Redis prefix (org ids repeat across test runs), and are
    deleted afterwards; a fail-open backoff left by an outage test does not leak into the next test."""
    import redis

    from apps.orgs import quotas

    prefix = f"hermes-test:{uuid.uuid4().hex}"
    monkeypatch.setattr(quotas, "KEY_PREFIX", prefix)
    quotas._gate.down_until = 0.0
    yield
    quotas._gate.down_until = 0.0
    try:
        client = quotas._gate.client()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    except redis.RedisError:
        pass


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Jobs run inline, in the test, instead of on a worker: with `django_capture_on_commit_callbacks(execute=True)`
    a test sees the mail a request sends (`apps.core.mail.send_later`) in `mail.outbox`."""
    from hermes_site.celery import app as celery_app

    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous
