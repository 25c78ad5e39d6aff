"""An agent written with the official a2a-sdk, served on loopback, is registered by its card and runs tasks."""

from __future__ import annotations

from typing import Any

import pytest

from apps.agents import actions
from apps.agents.client import AgentClient, AgentTarget, iterate_sync

pytestmark = pytest.mark.django_db


def test_sdk_agent_is_registered_by_its_card_and_streams(
    sdk_agent_base: str, sdk_agent_server: Any, allow_loopback: None, org: Any
) -> None:
    agent = actions.register_agent_by_url(org=org, url=f"{sdk_agent_base}/stream/")
    assert agent.name == "Third Party Streaming" and agent.streaming and agent.protocol_version == "1.0"
    assert agent.url == f"{sdk_agent_base}/stream/"
    updates = list(iterate_sync(lambda: AgentClient(AgentTarget.from_agent(agent)).run_once(text="ping")))
    assert updates[-1].state == "completed"
    assert [u.text for u in updates if u.kind == "artifact"] == ["echo: ping"]
    assert ("/stream/", "SendStreamingMessage") in sdk_agent_server.calls


def test_v03_sdk_agent_is_registered_by_its_legacy_card(
    sdk_agent_base: str, sdk_agent_server: Any, allow_loopback: None, org: Any
) -> None:
    agent = actions.register_agent_by_url(org=org, url=f"{sdk_agent_base}/legacy")
    assert agent.card_url.endswith("/legacy/.well-known/agent.json")
    assert agent.protocol_version == "0.3.0" and not agent.streaming
    updates = list(iterate_sync(lambda: AgentClient(AgentTarget.from_agent(agent)).run_once(text="ping")))
    assert updates[-1].state == "completed"
    assert ("/legacy/", "message/send") in sdk_agent_server.calls
