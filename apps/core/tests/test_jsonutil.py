"""JSON nested past Python's recursion limit is a clear 400 wherever Hermes reads JSON, not a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apps.core import jsonutil
from apps.tasks.forms import TaskForm

pytestmark = pytest.mark.django_db
ABYSS = "[" * 100_000 + "]" * 100_000


def test_loads_raises_the_decode_error_callers_already_handle() -> None:
    with pytest.raises(json.JSONDecodeError, match="the JSON nests too deeply to be read"):
        jsonutil.loads(ABYSS)
    with pytest.raises(ValueError):  # what cards, the federation inbox and the ping endpoint catch
        jsonutil.loads(ABYSS.encode())
    assert jsonutil.loads(b'{"a": [1]}') == {"a": [1]}


def test_the_api_answers_400_even_unauthenticated(client: Client, client_for: Any, alice: Any) -> None:
    response = client.post("/api/v1/auth/register", ABYSS, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    error = response.json()["error"]
    assert (
        error["code"] == "parse_error" and error["message"] == "JSON parse error - the JSON nests too deeply to be read"
    )
    assert client_for(alice).post("/api/v1/tasks", ABYSS, content_type="application/json").status_code == 400


def test_the_console_form_says_so_next_to_the_field() -> None:
    form = TaskForm({"agent": "", "text": "", "structured": "{" + '"a": {' * 5000 + "}" * 5001}, agents=[])
    assert not form.is_valid()
    assert form.errors["structured"] == ["Not valid JSON: the JSON nests too deeply to be read (line 1, column 1)."]
