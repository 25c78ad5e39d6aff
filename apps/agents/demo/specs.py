"""The built-in demo agents: what they are called, what their cards say. Served by `apps.agents.demo.app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentProvider, AgentSkill
from a2a.utils.constants import TransportProtocol
from django.conf import settings

DEMO_PREFIX = "/demo-agents"


@dataclass(frozen=True)
class DemoSpec:
    slug: str
    name: str
    description: str
    streaming: bool
    skills: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def path(self) -> str:
        return f"{DEMO_PREFIX}/{self.slug}/"


DEMO_AGENTS: tuple[DemoSpec, ...] = (
    DemoSpec(
        "echo",
        "Echo",
        "Answers with exactly what it was sent (text and data parts), as an artifact. Streams.",
        streaming=True,
        skills=({"id": "echo", "name": "Echo", "description": "Repeats the input", "tags": ["demo", "test"]},),
    ),
    DemoSpec(
        "summarizer",
        "Summarizer",
        "Deterministic extractive summary of English text: keeps the most representative third of the sentences "
        '(or {"sentences": n} in a data part, 1 to 1000). Answers through SendMessage/GetTask (no streaming).',
        streaming=False,
        skills=(
            {
                "id": "summarize",
                "name": "Summarize text",
                "description": "Extractive summary",
                "tags": ["text", "summary"],
                "examples": ["Paste a few paragraphs."],
            },
        ),
    ),
    DemoSpec(
        "calculator",
        "Calculator",
        "Evaluates arithmetic safely: + - * / // % ^, parentheses, sqrt, abs, round, min, max, floor, ceil, log, "
        "sin, cos, tan, pi, e. An invalid expression fails the task with the reason.",
        streaming=False,
        skills=(
            {
                "id": "calculate",
                "name": "Calculate",
                "description": "Arithmetic expressions",
                "tags": ["math"],
                "examples": ["2 * (3 + 4)", "sqrt(2) ^ 2"],
            },
        ),
    ),
    DemoSpec(
        "slow",
        "Slow worker",
        'Works for N seconds, 0 to 600 (the number in the text, or {"seconds": n, "interval": s} with an interval '
        "of 0.05 to 60 s; default 5 s, every 1 s), streaming a progress update each interval. Honors CancelTask.",
        streaming=True,
        skills=({"id": "wait", "name": "Long job", "description": "Streams progress", "tags": ["demo", "progress"]},),
    ),
    DemoSpec(
        "flaky",
        "Flaky echo",
        "An echo agent behind an unreliable gateway: a share of message sends get HTTP 503 "
        "(HERMES_DEMO_FLAKY_FAILURE_RATE, deterministic with HERMES_DEMO_FLAKY_SEED; message metadata "
        '{"flakyFailures": n}, 0 to 100, fails the first n attempts of that message; {"flakyFailureRate": r}, 0 to '
        "1, sets the share).",
        streaming=True,
        skills=({"id": "echo", "name": "Echo (unreliable)", "description": "Retries needed", "tags": ["demo"]},),
    ),
    DemoSpec(
        "greeter",
        "Greeter",
        "Asks for your name (the task waits in input-required), then greets you in its answer to your reply. Streams.",
        streaming=True,
        skills=({"id": "greet", "name": "Greet", "description": "Asks a question first", "tags": ["demo", "input"]},),
    ),
)
DEMO_BY_SLUG = {spec.slug: spec for spec in DEMO_AGENTS}


def public_url(spec: DemoSpec) -> str:
    return f"{settings.HERMES_PUBLIC_URL}{spec.path}"


def demo_card(spec: DemoSpec) -> AgentCard:
    """The card the agent serves; its interface URL follows HERMES_PUBLIC_URL (read on every call)."""
    return AgentCard(
        name=f"Hermes {spec.name}",
        description=spec.description,
        version=settings.HERMES_VERSION,
        provider=AgentProvider(organization="Hermes", url=settings.HERMES_PUBLIC_URL),
        # One endpoint speaks both protocol versions (the SDK's v0.3 compatibility is on), and saying so lets
        # v0.3 clients find it: the card then also carries the v0.3 fields (`url`, `protocolVersion`).
        supported_interfaces=[
            AgentInterface(url=public_url(spec), protocol_binding=TransportProtocol.JSONRPC, protocol_version=version)
            for version in ("1.0", "0.3")
        ],
        capabilities=AgentCapabilities(streaming=spec.streaming, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id=s["id"],
                name=s["name"],
                description=s["description"],
                tags=s.get("tags", []),
                examples=s.get("examples", []),
            )
            for s in spec.skills
        ],
    )


def demo_card_dict(spec: DemoSpec) -> dict[str, Any]:
    """The card as served (the SDK's serializer, v1.0 fields plus v0.3 compatibility fields)."""
    return agent_card_to_dict(demo_card(spec))
