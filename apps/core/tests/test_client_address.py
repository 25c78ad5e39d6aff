"""Who the client is, behind reverse proxies or not (apps.core.http.client_address)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from apps.core.http import client_address


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "client"),
    [
        ([], "10.0.0.2", "203.0.113.9", "10.0.0.2"),  # no proxy configured: the header is not believed
        (["10.0.0.2"], "10.0.0.2", "203.0.113.9", "203.0.113.9"),  # through the proxy
        (["10.0.0.2"], "198.51.100.1", "203.0.113.9", "198.51.100.1"),  # not from the proxy: header ignored
        (["10.0.0.0/24"], "10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.7", "203.0.113.9"),  # spoofed left entry
        (["10.0.0.2"], "10.0.0.2", "10.0.0.2", "10.0.0.2"),  # only proxies: the peer
        (["10.0.0.2"], "10.0.0.2", None, "10.0.0.2"),
        (["10.0.0.2"], None, "203.0.113.9", None),
    ],
)
def test_client_address(trusted: list[str], remote: str | None, forwarded: str | None, client: str | None) -> None:
    with override_settings(HERMES_TRUSTED_PROXIES=trusted):
        assert client_address(remote, forwarded) == client


@pytest.mark.django_db
def test_per_address_limits_see_the_clients_behind_a_trusted_proxy(client: Any, monkeypatch: Any) -> None:
    from apps.orgs import quotas

    monkeypatch.setattr(quotas, "ANONYMOUS_REQUESTS_PER_MINUTE", 1)
    monkeypatch.setattr(quotas, "clock", lambda: 1_800_000_030.0)
    reset = "/api/v1/auth/password/reset"
    body = {"email": "a@example.test"}
    with override_settings(HERMES_TRUSTED_PROXIES=["127.0.0.1"]):
        for visitor in ("203.0.113.1", "203.0.113.2"):  # one proxy, two people: one budget each
            assert client.post(reset, body, "application/json", HTTP_X_FORWARDED_FOR=visitor).status_code == 202
        assert client.post(reset, body, "application/json", HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 429
