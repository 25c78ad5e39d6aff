"""The demo agents as one ASGI (Starlette) app built from the a2a-sdk server pieces, mounted at /demo-agents/.

Each agent lives under `/demo-agents/<slug>/`: its card at `.well-known/agent-card.json` (and the legacy
`.well-known/agent.json`), its JSON-RPC endpoint at the prefix itself (v1.0 methods, v0.3 names accepted too).
`hermes_site/asgi.py` sends every HTTP request under /demo-agents/ here (`DemoAgentsDispatcher`).
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import AgentCard, Task
from django.conf import settings
from starlette.applications import Starlette
from starlette.routing import Mount

from apps.agents.demo.executors import (
    BadOption,
    CalculatorExecutor,
    DemoExecutor,
    EchoExecutor,
    FlakyExecutor,
    GreeterExecutor,
    SlowExecutor,
    SummarizerExecutor,
    flaky_options,
)
from apps.agents.demo.specs import DEMO_AGENTS, DEMO_PREFIX, DemoSpec, demo_card
from apps.core import jsonutil

EXECUTORS: dict[str, type[DemoExecutor]] = {
    "echo": EchoExecutor,
    "summarizer": SummarizerExecutor,
    "calculator": CalculatorExecutor,
    "slow": SlowExecutor,
    "flaky": FlakyExecutor,
    "greeter": GreeterExecutor,
}
SEND_METHODS = frozenset({"SendMessage", "SendStreamingMessage", "message/send", "message/stream"})
MAX_TASKS_KEPT = 2000
MAX_BODY_BYTES = 1024 * 1024


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory store, forgetting the oldest tasks past a cap so a long-running demo cannot grow
    without bound."""

    def __init__(self, limit: int = MAX_TASKS_KEPT) -> None:
        super().__init__()
        self._limit = limit
        self._order: OrderedDict[str, ServerCallContext] = OrderedDict()

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        self._order[task.id] = context
        while len(self._order) > self._limit:
            task_id, owner_context = self._order.popitem(last=False)
            await super().delete(task_id, owner_context)


class FlakyGate:
    """ASGI middleware answering HTTP 503 to a share of message sends (the caller sees a transport error).

    The decision for attempt k of message m is `Random(f"{seed}:{m}:{k}") < rate` when HERMES_DEMO_FLAKY_SEED is
    set, so it is reproducible and independent of other traffic; message metadata `{"flakyFailures": n}` fails
    exactly the first n attempts and `{"flakyFailureRate": r}` overrides the rate (`executors.flaky_options`
    reads both; a bad one is not failed here but by the agent, which says what it accepts).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.attempts: OrderedDict[str, int] = OrderedDict()

    def should_fail(self, message_id: str, metadata: dict[str, Any]) -> bool:
        attempt = self.attempts.pop(message_id, 0) + 1
        self.attempts[message_id] = attempt
        while len(self.attempts) > MAX_TASKS_KEPT:
            self.attempts.popitem(last=False)
        try:
            failures, rate = flaky_options(metadata)
        except BadOption:
            # Let it through: the agent (FlakyExecutor) fails the task saying which option is wrong, where a 503
            # or an error out of this middleware would only say that the gateway failed.
            return False
        if failures is not None:
            return attempt <= failures
        rate = settings.HERMES_DEMO_FLAKY_FAILURE_RATE if rate is None else rate
        seed = settings.HERMES_DEMO_FLAKY_SEED
        draw = random.Random(f"{seed}:{message_id}:{attempt}").random() if seed else random.random()
        return draw < float(rate)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                await _respond(send, 413, "request too large")
                return
        message_id, metadata, method = _describe(body)
        if method in SEND_METHODS and self.should_fail(message_id, metadata):
            await _respond(send, 503, "flaky demo agent: temporarily unavailable, retry", retry_after=True)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _respond(send: Any, status: int, error: str, *, retry_after: bool = False) -> None:
    payload = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _describe(body: bytes) -> tuple[str, dict[str, Any], str]:
    try:
        request = jsonutil.loads(body)
        params = request.get("params") or {}
        message = params.get("message") or {}
        metadata = {**(params.get("metadata") or {}), **(message.get("metadata") or {})}
        return str(message.get("messageId", "")), metadata, str(request.get("method", ""))
    except (ValueError, AttributeError, TypeError):
        return "", {}, ""


def agent_app(spec: DemoSpec) -> Any:
    card = demo_card(spec)

    async def current_card(served: AgentCard) -> AgentCard:
        # HERMES_PUBLIC_URL may differ per process (and per test); the card always names the current one.
        return demo_card(spec)

    handler = DefaultRequestHandler(
        agent_executor=EXECUTORS[spec.slug](), task_store=BoundedTaskStore(), agent_card=card
    )
    routes = [
        *create_agent_card_routes(card, card_modifier=current_card),
        *create_agent_card_routes(card, card_modifier=current_card, card_url="/.well-known/agent.json"),
        *create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True),
    ]
    app: Any = Starlette(routes=routes)
    return FlakyGate(app) if spec.slug == "flaky" else app


def build_demo_app() -> Starlette:
    return Starlette(routes=[Mount(f"{DEMO_PREFIX}/{spec.slug}", app=agent_app(spec)) for spec in DEMO_AGENTS])


class DemoAgentsDispatcher:
    """Wraps the site's ASGI app: HTTP under /demo-agents/ goes to the demo agents, everything else through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._demo: Starlette | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(DEMO_PREFIX + "/")
            and settings.HERMES_FEATURES.get("demo_agents", True)
        ):
            if self._demo is None:  # built on first use, inside the server's event loop
                self._demo = build_demo_app()
            await self._demo(scope, receive, send)
            return
        await self.app(scope, receive, send)
