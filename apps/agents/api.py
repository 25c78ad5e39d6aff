"""The agents API: register (by card or by hand), read, update, delete, refresh, assign demo agents, marketplace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.agents import actions, selectors
from apps.agents.models import Agent
from apps.agents.serializers import (
    AgentCreateSerializer,
    AgentDetailSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    DemoAssignmentSerializer,
    ForeignAgentSerializer,
    MarketplaceAgentSerializer,
)
from apps.core.api import OrgScopedViewSet, describe
from apps.core.errors import HermesAPIError
from apps.core.idempotency import IdempotentCreateMixin

_BAD_INPUT = (
    "Errors: an unreachable card is 400 `card_unreachable`, a missing one `card_not_found`, an invalid one "
    "`card_invalid` (each with the reason); an address the SSRF guard refuses is 400 `ssrf_blocked` with "
    "`details.rule` (loopback, private, link_local, metadata, …); a slug already used in the org is 409 `slug_taken`."
)
_CARD_ERRORS = (
    "`card_unreachable`, `card_not_found`, `card_invalid`: the card could not be used (the message says why); "
    "`ssrf_blocked`: the SSRF guard refuses the address (`details.rule`)."
)
_SLUG_TAKEN = "`slug_taken`: the org has an agent with this slug."


def _api_error(exc: actions.AgentActionError) -> HermesAPIError:
    return HermesAPIError(str(exc), code=exc.code, status_code=exc.status, details=exc.details)


class _AgentRegistration:
    """The create step itself, below IdempotentCreateMixin in the MRO so a replayed key never re-registers."""

    org: Any
    access: Any
    get_serializer_context: Callable[[], dict[str, Any]]

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = AgentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            if data["mode"] == "manual":
                agent = actions.register_agent_manually(
                    org=self.org,
                    by=self.access,
                    url=data["url"],
                    name=data["name"],
                    slug=data.get("slug"),
                    description=data["description"],
                    version=data["version"],
                    streaming=data["streaming"],
                    protocol_version=data["protocol_version"],
                    skills=data["skills"],
                    visibility=data["visibility"],
                )
            else:
                agent = actions.register_agent_by_url(
                    org=self.org, by=self.access, url=data["url"], slug=data.get("slug"), visibility=data["visibility"]
                )
        except actions.AgentActionError as exc:
            raise _api_error(exc) from exc
        body = AgentDetailSerializer(agent, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)


class AgentViewSet(  # type: ignore[misc]
    IdempotentCreateMixin, _AgentRegistration, mixins.ListModelMixin, OrgScopedViewSet
):
    """The org's agents. Reading one by id also finds public agents of other orgs (usable for tasks); changing
    one finds only the org's own. Anything else is a 404, like a missing id."""

    model = Agent
    serializer_class = AgentSerializer
    read_action = "agents:read"
    write_action = "agents:write"

    def scoped_queryset(self) -> QuerySet[Any]:
        return super().scoped_queryset().select_related("organization", "created_by")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "org": self.org}

    def _own(self) -> Agent:
        return selectors.get_org_agent(self.org, self.kwargs["pk"])

    @describe(
        "List the organization's agents",
        action="agents:read",
        notes="The org's own agents, newest first (public agents of other orgs: GET /marketplace).",
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @describe(
        "Read an agent",
        action="agents:read",
        notes="The org's own agents, with the raw card (`AgentDetail`); a public agent of another org is answered "
        "with its marketplace listing and `owned: false` (`ForeignAgent`): its endpoint, card, errors and creator "
        "stay its owner's.",
        responses={
            # A `oneOf` the two answers' `owned` (`true` / `false`) makes exclusive. No `discriminator`: OpenAPI 3.0
            # maps a discriminator's string values to schemas, and `owned` is a boolean.
            200: PolymorphicProxySerializer(
                component_name="AgentOrListing",
                serializers=[AgentDetailSerializer, ForeignAgentSerializer],
                resource_type_field_name=None,
            )
        },
    )
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        agent = selectors.get_usable_agent(self.org, pk)
        if agent.organization_id != self.org.pk:
            return Response(ForeignAgentSerializer(agent).data)
        return Response(AgentDetailSerializer(agent, context=self.get_serializer_context()).data)

    @describe(
        "Register an agent",
        action="agents:write",
        notes="mode `card` (default): Hermes fetches `<url>/.well-known/agent-card.json`, falling back to "
        "`/.well-known/agent.json` (a URL ending in .json is the card itself), validates it with the A2A SDK's "
        "AgentCard model and stores name, description, version, skills, capabilities and the JSON-RPC endpoint. "
        "mode `manual`: no card; give `name`, the endpoint `url` and optionally `streaming`, `description`, "
        "`version`, `protocol_version`, `skills`. Supports `Idempotency-Key`. " + _BAD_INPUT,
        request=AgentCreateSerializer,
        responses={201: AgentDetailSerializer},
        errors={
            400: _CARD_ERRORS + " `invalid_idempotency_key`: a malformed `Idempotency-Key`.",
            409: _SLUG_TAKEN + " `idempotency_conflict`: the `Idempotency-Key` was used with a different request.",
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # IdempotentCreateMixin (next in the MRO) handles Idempotency-Key around _AgentRegistration.create.
        return super().create(request, *args, **kwargs)

    @describe(
        "Update an agent",
        action="agents:write",
        notes="Name, slug, description, version, visibility (`public` lists it in the marketplace and lets other "
        "orgs send it tasks), streaming; `url` only for agents registered without a card.",
        request=AgentUpdateSerializer,
        responses={200: AgentDetailSerializer},
        errors={400: "`ssrf_blocked`: the SSRF guard refuses the new `url` (`details.rule`).", 409: _SLUG_TAKEN},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        agent = self._own()
        serializer = AgentUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            agent = actions.update_agent(agent, by=self.access, **serializer.validated_data)
        except actions.AgentActionError as exc:
            raise _api_error(exc) from exc
        return Response(AgentDetailSerializer(agent, context=self.get_serializer_context()).data)

    @describe(
        "Delete an agent",
        action="agents:write",
        notes="204. An agent that tasks ran on (this org's, or other orgs' while it was public) is retired rather "
        "than removed: its tasks keep it for their timelines, but it is listed nowhere, takes no task and answers "
        "404 from then on, like a deleted one.",
        request=None,
        responses={204: None},
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        actions.delete_agent(self._own(), by=self.access)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @describe(
        "Re-fetch an agent's card",
        action="agents:write",
        notes="Updates the agent from its card. A failure is recorded on the agent (`last_error`). " + _BAD_INPUT,
        request=None,
        responses={200: AgentDetailSerializer},
        errors={400: _CARD_ERRORS + " `no_card`: the agent was registered without a card."},
    )
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        try:
            agent = actions.refresh_agent_card(self._own(), by=self.access)
        except actions.AgentActionError as exc:
            raise _api_error(exc) from exc
        return Response(AgentDetailSerializer(agent, context=self.get_serializer_context()).data)

    @describe(
        "Add the built-in demo agents",
        action="agents:write",
        notes="Echo, summarizer, calculator, slow, flaky and greeter, served by this instance under /demo-agents/. "
        "Idempotent: agents the org already has are refreshed, never doubled (201 when any was created, else 200).",
        request=None,
        responses={200: DemoAssignmentSerializer, 201: DemoAssignmentSerializer},
    )
    @action(detail=False, methods=["post"], url_path="assign-demo")
    def assign_demo(self, request: Request) -> Response:
        result = actions.assign_demo_agents(org=self.org, by=self.access)
        body = DemoAssignmentSerializer(result, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class MarketplaceViewSet(mixins.ListModelMixin, OrgScopedViewSet):  # type: ignore[misc]
    model = Agent
    serializer_class = MarketplaceAgentSerializer
    read_action = "agents:read"

    def scoped_queryset(self) -> QuerySet[Any]:
        if not settings.HERMES_FEATURES.get("marketplace", True):
            raise Http404("The marketplace is switched off.")
        search = (self.request.query_params.get("q") or "").strip()[:100]
        return selectors.marketplace_agents(search or None)

    @describe(
        "Browse public agents",
        action="agents:read",
        notes="Public agents of every organization; any of them can run tasks for your org. `q` matches the name, "
        "description and skills (names, descriptions, tags).",
        parameters=[OpenApiParameter("q", str, description="Search text.")],
        errors={404: "`not_found`: the marketplace is switched off on this instance."},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
