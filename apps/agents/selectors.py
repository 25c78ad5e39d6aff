"""Reads of agents, always resolved inside the caller's org: another org's private agent does not exist for you."""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet
from django.http import Http404

from apps.agents.cards import CardInfo, fetch_card
from apps.agents.models import Agent, Visibility


def org_agents(org: Any) -> QuerySet[Agent]:
    """The org's own agents (the ones it may edit)."""
    return Agent.objects.for_org(org)


def usable_agents(org: Any) -> QuerySet[Agent]:
    """Agents the org may send tasks to: its own plus every public agent (the marketplace)."""
    return Agent.objects.unscoped("an org may use public agents of other orgs").filter(
        Q(organization=org) | Q(visibility=Visibility.PUBLIC)
    )


def marketplace_agents(search: str | None = None) -> QuerySet[Agent]:
    """Public agents of every org, optionally matching `search` in the name, description or skills (their names,
    descriptions and tags: `Agent.skills_text`)."""
    agents = (
        Agent.objects.unscoped("the marketplace lists public agents of every org")
        .filter(visibility=Visibility.PUBLIC)
        .select_related("organization")
    )
    if search:
        agents = agents.filter(
            Q(name__icontains=search) | Q(description__icontains=search) | Q(skills_text__icontains=search)
        )
    return agents


def as_uuid(agent_id: Any) -> uuid.UUID:
    try:
        return agent_id if isinstance(agent_id, uuid.UUID) else uuid.UUID(str(agent_id))
    except ValueError as exc:
        raise Http404("No such agent.") from exc


def get_org_agent(org: Any, agent_id: Any) -> Agent:
    """One of the org's own agents, or 404 (also for another org's agent, public or not)."""
    try:
        return org_agents(org).get(pk=as_uuid(agent_id))
    except Agent.DoesNotExist as exc:
        raise Http404("No such agent.") from exc


def get_usable_agent(org: Any, agent_id: Any) -> Agent:
    """An agent the org may send tasks to (its own or a public one), or 404 — exactly like a missing id."""
    try:
        return usable_agents(org).select_related("organization").get(pk=as_uuid(agent_id))
    except Agent.DoesNotExist as exc:
        raise Http404("No such agent.") from exc


def preview_agent_card(url: str) -> CardInfo:
    """The console's "preview before saving": fetch and validate the card at `url` and store nothing.

    Raises CardError or OutboundBlocked, the same failures `actions.register_agent_by_url` reports.
    """
    return async_to_sync(fetch_card)(url)
