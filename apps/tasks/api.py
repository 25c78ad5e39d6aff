"""Tasks API: send tasks to agents, read them and their timelines, cancel, follow up, stream."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_view
from rest_framework import mixins, renderers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.agents import selectors as agent_selectors
from apps.core.api import OrgScopedViewSet, describe
from apps.core.errors import Conflict, HermesAPIError, whole_number
from apps.core.idempotency import IdempotentCreateMixin
from apps.orgs.auth import StreamCredential
from apps.tasks import actions, selectors
from apps.tasks.models import Task
from apps.tasks.serializers import (
    STATUS_CHOICES,
    FollowUpSerializer,
    TaskCreateSerializer,
    TaskEventSerializer,
    TaskSerializer,
    TaskTimelineSerializer,
)
from apps.tasks.streams import TimelineCursor

# A task input's size is that of the compact UTF-8 JSON Hermes stores (`actions.input_size`), however the request
# spelled it: JSON may write any character as a `\uXXXX` escape, six bytes for a one-byte character (a four-byte one
# is twelve, a surrogate pair), so a body carries an input within the limit in at most six times the limit, plus
# the request's other fields. Only a body larger than that is refused before it is parsed, as a body too large;
# everything else is parsed and the input itself measured. (DATA_UPLOAD_MAX_MEMORY_SIZE caps every body anyway.)
_MAX_ESCAPE_EXPANSION = 6
_BODY_SLACK = 16 * 1024


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; errors still render as JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return renderers.JSONRenderer().render(data)


def _not_an_agent_id(value: str) -> str | None:
    """What is wrong with an `agent` value that is no id at all; None for a well-formed one."""
    try:
        agent_selectors.as_uuid(value)
    except Http404:
        return f"'{value[:64]}' is not an agent id (a UUID); GET /api/v1/agents lists your agents."
    return None


def _too_large(size: int, limit: int) -> HermesAPIError:
    return HermesAPIError(
        f"The task input is {size} bytes; the limit is {limit} bytes.",
        code="input_too_large",
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        details={"size": size, "limit": limit},
    )


def _check_body_size(request: Request) -> None:
    """Refuse, before parsing, a body no input within HERMES_MAX_TASK_INPUT_BYTES could need (POST /tasks and
    follow-ups alike): 413 `request_too_large`, about the body, which is all that is known of it."""
    limit = settings.HERMES_MAX_TASK_INPUT_BYTES
    most = _MAX_ESCAPE_EXPANSION * limit + _BODY_SLACK
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # not a length at all: the server reads no more than it received, and the input is measured
    if declared > most:
        raise HermesAPIError(
            f"The request body is {declared} bytes; a task input within the {limit}-byte limit fits in "
            f"{most} bytes, even with every character escaped.",
            code="request_too_large",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            details={"size": declared, "limit": most},
        )


def _check_input_size(message: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    # The one size rule (actions.check_input_size), checked before the agent lookup and the task's transaction.
    try:
        actions.check_input_size(message, metadata)
    except actions.TaskInputTooLarge as exc:
        raise _too_large(exc.size, exc.limit) from exc


def _invalid_input(exc: actions.InvalidMessage) -> HermesAPIError:
    # What the serializer does not check field by field (how deep the JSON nests) the domain rule refuses.
    return HermesAPIError(
        f"The {exc.field} cannot be sent to an agent: {exc}.", code="invalid", details={exc.field: [f"{exc}."]}
    )


def _agent_not_found(value: str) -> HermesAPIError:
    # 404 whatever the reason (another org's private agent must look like a missing one); what a caller can fix
    # without learning anything, a value that is no id at all, is said.
    reason = _not_an_agent_id(value) or "Unknown agent."
    return HermesAPIError("Agent not found.", code="agent_not_found", status_code=404, details={"agent": [reason]})


def _agent_unavailable(exc: actions.AgentNotUsable) -> Conflict:
    # A 409, not the 404 of POST /tasks: the task is the caller's and names its agent, so nothing is hidden by
    # saying the agent no longer takes its messages.
    return Conflict(str(exc), code="agent_unavailable", details={"agent": str(exc.agent_id), "reason": exc.reason})


class _SendTask:
    """POST /tasks, below IdempotentCreateMixin in the MRO so a replayed Idempotency-Key never reaches it."""

    org: Any
    access: Any

    def create(self, request: Request) -> Response:
        _check_body_size(request)
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        _check_input_size(data["input"], data["metadata"])
        agent = selectors.usable_agent(self.org, data["agent"])
        if agent is None:
            raise _agent_not_found(data["agent"])
        deadline = timedelta(seconds=data["deadline_seconds"]) if data.get("deadline_seconds") else None
        try:
            task = actions.create_task(
                org=self.org,
                agent=agent,
                message=data["input"],
                metadata=data["metadata"],
                access=self.access,
                deadline=deadline,
            )
        except actions.AgentNotUsable as exc:  # made private or deleted since the lookup above
            raise _agent_not_found(data["agent"]) from exc
        except actions.InvalidMessage as exc:
            raise _invalid_input(exc) from exc
        except actions.TaskInputTooLarge as exc:  # measured once more on the normalized message
            raise _too_large(exc.size, exc.limit) from exc
        return Response(TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)


# What sending a message to an agent can be refused for, besides the body's own fields (POST /tasks, follow-ups).
_INPUT_ERRORS = {
    400: "`details.input` (or `details.metadata`): an input no agent could be sent (docs/tasks.md); for an agent "
    "reached through federation, `unknown_peer`, `peer_disabled` or `no_link_key` (the link has no live key yet).",
    403: "`policy_denied`: an agent reached through federation that the org's federation policy forbids; for such "
    "an agent also `missing_scope` (`details.required_scope`) or `role_forbidden` (`details.required_action`) for "
    "`federation:write` (asking or answering another org's agent needs it as well as `tasks:write`).",
    413: "`input_too_large`: the input exceeds HERMES_MAX_TASK_INPUT_BYTES (`details.size`, `details.limit`), "
    "measured as compact UTF-8 JSON however the body spells it; `request_too_large`: a body larger than any input "
    "within that limit could need (six times it, every character escaped, plus 16 KiB), refused unread.",
}


@extend_schema_view(
    list=describe(
        "List tasks",
        action="tasks:read",
        notes="The org's tasks, newest first, cursor-paginated; filter by `status` and `agent`.",
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=STATUS_CHOICES,
                many=True,
                description="Only tasks in this status; repeat it for any of several (`status=failed&status=rejected`)",
            ),
            OpenApiParameter(
                "agent", OpenApiTypes.UUID, many=True, description="Only tasks sent to this agent (its id); repeatable."
            ),
        ],
    ),
    retrieve=describe("Read a task", action="tasks:read", notes="The task with its input and current status."),
)
class TaskViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _SendTask, mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet
):
    """The org's tasks: send, read, follow, cancel and continue them."""

    model = Task
    serializer_class = TaskSerializer
    read_action = "tasks:read"
    write_action = "tasks:write"

    @describe(
        "Send a task to an agent",
        action="tasks:write",
        notes="202 with the task, which runs asynchronously (follow it with `/events`, `/stream` or the "
        "websocket). An `Idempotency-Key` header makes a retried POST return the original task.",
        request=TaskCreateSerializer,
        responses={202: TaskSerializer},
        errors={
            **_INPUT_ERRORS,
            400: _INPUT_ERRORS[400] + " `invalid_idempotency_key`: a malformed `Idempotency-Key`.",
            404: "`agent_not_found`: no such agent among the org's and the public ones (another org's private "
            "agent looks the same); `details.agent` says when the value is no agent id at all.",
            409: "`idempotency_conflict`: the `Idempotency-Key` was used before with a different request.",
            429: "Also past the organization's tasks per day (`details.limit`: `tasks_per_day`).",
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Declared here so the schema sees it: IdempotentCreateMixin (next in the MRO) wraps _SendTask.create.
        return super().create(request, *args, **kwargs)

    def scoped_queryset(self) -> QuerySet[Task]:
        return selectors.tasks_for_org(self.org)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and isinstance(
            getattr(response, "accepted_renderer", None), EventStreamRenderer
        ):
            # An error answering `Accept: text/event-stream` is still a JSON document: say so, or an SSE client
            # would try to read it as events.
            response.content_type = "application/json"
        return response

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.action != "list":
            return queryset
        params = self.request.query_params
        errors: dict[str, list[str]] = {}
        # `status` repeats for "any of these" (it used to keep only the last one given, silently).
        if states := [state for state in params.getlist("status") if state]:
            if unknown := [state for state in states if state not in STATUS_CHOICES]:
                errors["status"] = [f"Unknown status {', '.join(unknown)}: one of {', '.join(STATUS_CHOICES)}."]
            queryset = queryset.filter(state__in=states)
        # `agent` repeats the same way.
        if agents := [agent for agent in params.getlist("agent") if agent]:
            if problems := [problem for agent in agents if (problem := _not_an_agent_id(agent))]:
                errors["agent"] = problems
            else:
                queryset = queryset.filter(agent_id__in=agents)
        if errors:
            raise HermesAPIError("Invalid filter; see details.", code="invalid", details=errors)
        return queryset

    @describe(
        "Cancel a task",
        action="tasks:write",
        notes="202 with the task: the agent's CancelTask is called and the job stops.",
        request=None,
        responses={202: TaskSerializer},
        errors={
            403: "`missing_scope` (`details.required_scope`) or `role_forbidden` (`details.required_action`) for "
            "`federation:write`: a task on "
            "another org's agent (reached through federation) is canceled in the org's name, which needs it as "
            "well as `tasks:write`.",
            409: "`task_finished`: the task is already final (completed, failed, canceled or rejected).",
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        try:
            task = actions.cancel_task(self.get_object(), access=self.access)
        except actions.TaskNotCancelable as exc:
            raise Conflict(str(exc), code="task_finished") from exc
        return Response(TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)

    @describe(
        "Send a follow-up message",
        action="tasks:write",
        notes="202 with the task: the message goes to the agent, for a task waiting for input "
        "(`input-required` or `auth-required`).",
        request=FollowUpSerializer,
        responses={202: TaskSerializer},
        errors={
            **_INPUT_ERRORS,
            409: "`task_not_waiting`: the task is not waiting for input. `agent_unavailable`: the task's agent takes "
            "no more messages from this org — another org's agent that its owner made private or deleted "
            "(`details.reason`: `unavailable`), or the org's own agent, deleted (`retired`); nothing is sent or "
            "written (docs/tasks.md).",
        },
    )
    @action(detail=True, methods=["post"])
    def messages(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        _check_body_size(request)
        serializer = FollowUpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = serializer.validated_data["input"]
        _check_input_size(message)
        try:
            task = actions.continue_task(task, message=message, access=self.access)
        except actions.TaskNotWaitingForInput as exc:
            raise Conflict(str(exc), code="task_not_waiting") from exc
        except actions.AgentNotUsable as exc:
            raise _agent_unavailable(exc) from exc
        except actions.InvalidMessage as exc:
            raise _invalid_input(exc) from exc
        except actions.TaskInputTooLarge as exc:
            raise _too_large(exc.size, exc.limit) from exc
        return Response(TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)

    @describe(
        "Read a task's timeline",
        action="tasks:read",
        notes="The task's events in `seq` order, with its status and `last_seq`; page on with "
        "`after=<next_after>` until `next_after` is null.",
        parameters=[
            OpenApiParameter(
                "after", int, description="Only events with seq greater than this (a whole number, default 0)."
            ),
            OpenApiParameter(
                "limit",
                int,
                description=f"At most this many events (1 to {selectors.EVENT_PAGE}, the default; more is "
                f"clamped to {selectors.EVENT_PAGE}).",
            ),
        ],
        responses={200: TaskTimelineSerializer},
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        after = whole_number(request.query_params.get("after"), "after", default=0)
        limit = whole_number(
            request.query_params.get("limit"),
            "limit",
            default=selectors.EVENT_PAGE,
            minimum=1,
            maximum=selectors.EVENT_PAGE,
        )
        events = selectors.events_after(task, after, limit)
        return Response(
            {
                "task_id": str(task.pk),
                "status": task.state,
                "last_seq": task.last_seq,
                "results": TaskEventSerializer(events, many=True).data,
                "next_after": events[-1].seq if events and events[-1].seq < task.last_seq else None,
            }
        )

    @describe(
        "Stream a task's timeline (Server-Sent Events)",
        action="tasks:read",
        notes="`text/event-stream`: the events after `after` (or `Last-Event-ID`), then new ones live. Each "
        'event is a frame `id: <seq>`, `event: <kind>`, `data: {"task_id", "seq", "kind", "data", '
        '"created_at"}`; once the task is final and fully sent, `event: end` with `data: {"state"}`, and once the '
        'API key or session stops authenticating (revoked, expired, signed out), `event: end` with `data: {"error": '
        '{"code", "message"}}` (within a second). A response lasts at most HERMES_SSE_MAX_SECONDS: reconnect with '
        "`Last-Event-ID` (docs/tasks.md). Errors are JSON.",
        parameters=[
            OpenApiParameter("after", int, description="Start after this seq (a whole number, default 0)."),
            OpenApiParameter(
                "Last-Event-ID",
                int,
                location=OpenApiParameter.HEADER,
                description="Resume after this seq (what EventSource sends on reconnecting); wins over `after`.",
            ),
        ],
        responses={(200, "text/event-stream"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, EventStreamRenderer])
    def stream(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        task = self.get_object()
        resume = request.headers.get("Last-Event-ID")
        after = whole_number(
            resume or request.query_params.get("after"), "Last-Event-ID" if resume else "after", default=0
        )
        # Past the task's last event (as the websocket): the events up to it are still to come, not seen.
        after = min(after, task.last_seq)
        # The stream ends once the key or session it was opened with no longer authenticates (apps.tasks.streams).
        session = getattr(request._request, "session", None)
        credential = StreamCredential.of(self.access, session.session_key if session is not None else None)
        cursor = TimelineCursor(task.pk, task.organization_id, after, credential=credential)
        response: HttpResponseBase
        if request.method == "HEAD":
            # The headers a GET would get, at once: a HEAD sends no body, yet the stream behind it went on polling
            # for up to HERMES_SSE_MAX_SECONDS, holding a stream slot and the client's keep-alive connection.
            response = HttpResponse(content_type="text/event-stream")
        else:
            frames = cursor.async_frames() if isinstance(request._request, ASGIRequest) else cursor.sync_frames()
            response = StreamingHttpResponse(frames, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass frames through as they come
        return response
