from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.federation import actions, policy
from apps.federation.models import Effect, Peer


@pytest.fixture(autouse=True)
def _fresh_policy_cache() -> Iterator[None]:
    policy.clear_cache()
    yield
    policy.clear_cache()


@pytest.fixture(autouse=True)
def _loopback_peers(settings: Any) -> None:
    """Test peers (stub servers, live_server) listen on loopback, which the SSRF guard refuses by default."""
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]


@pytest.fixture(autouse=True)
def _jobs_inline(eager_celery: None) -> None:
    """Run jobs inline (tests/conftest.py): unit tests drive delivery synchronously (the two-instance tests use real
    workers). Also keeps these tests from leaving jobs in the shared broker for some later test's worker to pick
    up."""


@pytest.fixture
def peer(db: Any) -> Peer:
    created = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(created, secret=b"k1" * 16)
    return created


@pytest.fixture
def allow_all(org: Any, other_org: Any) -> None:
    for o in (org, other_org):
        actions.set_policy(org=o, remote="*", effect=Effect.ALLOW)
