"""An agent written with nothing but the official a2a-sdk (server side), as a third party would write one.

Served under three prefixes of one Starlette app: /stream/ (card says streaming), /plain/ (no streaming) and
/legacy/ (a v0.3 card; the endpoint has the SDK's v0.3 compatibility on). Behaviour by the user's text:
"fail" fails the task, "ask" asks for input and completes with the follow-up, "message" answers with a plain
message, "boom" raises inside the executor; anything else is echoed as an artifact after a progress note.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from a2a.helpers import get_data_parts, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Message, Part, Role, TaskState
from google.protobuf import json_format, struct_pb2
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route


class ThirdPartyExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if text == "message":
            reply = Message(role=Role.ROLE_AGENT, message_id="reply-1", parts=[new_text_part("just a message")])
            await event_queue.enqueue_event(reply)
            return
        task = context.current_task or new_task_from_user_message(context.message)  # type: ignore[arg-type]
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if text == "boom":
            raise RuntimeError("executor exploded")
        if text == "fail":
            await updater.failed(updater.new_agent_message([new_text_part("cannot do that")]))
            return
        if text == "ask":
            await updater.requires_input(updater.new_agent_message([new_text_part("which city?")]))
            return
        await updater.update_status(
            TaskState.TASK_STATE_WORKING, message=updater.new_agent_message([new_text_part("thinking")])
        )
        await asyncio.sleep(0.05)
        parts = [new_text_part(f"got: {text}" if context.current_task else f"echo: {text}")]
        for item in get_data_parts(list(context.message.parts)) if context.message else []:
            value = struct_pb2.Value()
            json_format.ParseDict({"received": item}, value)
            parts.append(Part(data=value))
        await updater.add_artifact(parts, name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def _card(base: str, *, streaming: bool) -> AgentCard:
    return AgentCard(
        name="Third Party" + (" Streaming" if streaming else ""),
        description="Written with the official a2a-sdk only",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=base, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Echoes", tags=["test"])],
    )


def _agent_app(card: AgentCard, *, legacy_card: dict[str, Any] | None = None) -> Starlette:
    handler = DefaultRequestHandler(
        agent_executor=ThirdPartyExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes: list[Any] = [*create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)]
    if legacy_card is None:
        routes += create_agent_card_routes(card)
    else:

        async def legacy(request: Any) -> JSONResponse:
            return JSONResponse(legacy_card)

        routes.append(Route("/.well-known/agent.json", legacy))
    return Starlette(routes=routes)


class MethodRecorder:
    """ASGI middleware noting (path, JSON-RPC method) of every request, so tests can see what went over the wire."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        self.calls.append((scope["path"], json.loads(b"".join(chunks))["method"]))
                    except (ValueError, KeyError, TypeError):
                        self.calls.append((scope["path"], "?"))
            return message

        await self.app(scope, recording_receive, send)


def build_app(base_url: str) -> MethodRecorder:
    legacy_url = f"{base_url}/legacy/"
    legacy_card = {
        "name": "Legacy Third Party",
        "description": "Announces A2A 0.3",
        "version": "0.3.9",
        "url": legacy_url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": {"streaming": False},
        "defaultInputModes": ["text"],
        "defaultOutputModes": ["text"],
        "skills": [{"id": "echo", "name": "Echo", "description": "Echoes", "tags": []}],
    }
    return MethodRecorder(
        Starlette(
            routes=[
                Mount("/stream", _agent_app(_card(f"{base_url}/stream/", streaming=True))),
                Mount("/plain", _agent_app(_card(f"{base_url}/plain/", streaming=False))),
                Mount("/legacy", _agent_app(_card(legacy_url, streaming=False), legacy_card=legacy_card)),
            ]
        )
    )
