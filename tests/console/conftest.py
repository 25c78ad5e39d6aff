from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

# Reused fixture: a loopback HTTP server serving agent cards (tests/agents/conftest.py).
from tests.agents.conftest import card_server  # noqa: F401


@pytest.fixture
def as_user() -> Callable[[Any], Client]:
    """A browser-like client signed in as `user` (acting for their first org)."""

    def make(user: Any) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


HX = {"HTTP_HX_REQUEST": "true"}


def main_html(response: Any) -> str:
    """The page's <main> (the header's org switcher and nav would match many assertions)."""
    return str(response.content.decode().split('<main id="main"', 1)[1])
