"""Scoped reads of tasks and timelines."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404

from apps.agents import selectors as agent_selectors
from apps.agents.models import Agent
from apps.tasks.models import Task, TaskEvent

EVENT_PAGE = 500


def tasks_for_org(org: Any) -> QuerySet[Task]:
    return Task.objects.for_org(org).select_related("agent")


def filterable_agents(org: Any) -> QuerySet[Agent]:
    """The agents the task list filters by: the org's own (also before their first task) and every other agent the
    org's tasks went to (a public agent of another org, a retired one), and no other: offering only its own,
    a task sent to a marketplace agent could not be filtered ("Select a valid choice")."""
    used = Task.objects.for_org(org).values("agent_id")
    return (
        Agent.with_retired.unscoped("agents of other orgs that this org's tasks went to")
        .filter(Q(organization=org, retired_at=None) | Q(pk__in=used))
        .select_related("organization")
    )


def task_for_org(org: Any, task_id: Any) -> Task | None:
    """The org's task with this id, or None (a malformed id is a miss, like another org's id)."""
    try:
        return tasks_for_org(org).get(pk=task_id)
    except (Task.DoesNotExist, ValidationError, ValueError):  # a non-UUID string raises ValidationError
        return None


def events_after(task: Task, after: int = 0, limit: int = EVENT_PAGE) -> list[TaskEvent]:
    """Events with seq > after, in order (the unique (task, seq) index serves this)."""
    return list(
        TaskEvent.objects.for_org(task.organization_id).filter(task_id=task.pk, seq__gt=after).order_by("seq")[:limit]
    )


def event_messages_after(task_id: Any, org_id: Any, after: int, limit: int = EVENT_PAGE) -> list[dict[str, Any]]:
    """The wire shape of events after `after` (used by consumers and SSE, which hold ids, not rows)."""
    rows = TaskEvent.objects.for_org(org_id).filter(task_id=task_id, seq__gt=after).order_by("seq")[:limit]
    return [event.as_message() for event in rows]


def task_progress(task_id: Any, org_id: Any) -> tuple[str, int] | None:
    """(state, last_seq) of a task: what a stream compares against to know whether it missed something."""
    row = Task.objects.for_org(org_id).filter(pk=task_id).values_list("state", "last_seq").first()
    return (row[0], row[1]) if row else None


# What sending a task reads of its agent. The card, skills and capabilities are JSON documents that the submit
# path never looks at; decoding them was the largest single cost of `POST /tasks` after its INSERTs.
_SUBMIT_FIELDS = ("id", "organization_id", "name", "slug", "visibility", "federation_address", "retired_at")


def usable_agent(org: Any, agent_id: Any) -> Agent | None:
    """An agent the org may send tasks to (its own or a public one); None like a missing id."""
    try:
        pk = agent_selectors.as_uuid(agent_id)
    except Http404:
        return None
    # Fetched by primary key and checked with `is_usable_by` (the rule `usable_agents` filters by): the OR of
    # that filter costs a third of this lookup's time to compile, on the path of every submit.
    rows = Agent.objects.unscoped("an org may use public agents of other orgs").only(*_SUBMIT_FIELDS).filter(pk=pk)
    agent = next(iter(rows[:1]), None)
    return agent if agent is not None and agent.is_usable_by(org) else None


def agent_contact(agent_id: Any) -> str:
    """What the agent badge (templates/agents/online_badge.html, Agent.contact) says of a task's agent: "online",
    "offline" (its last contact failed; also a deleted agent), "idle" (reached without error, not lately) or
    "never" — so the live page does not turn "not contacted yet" into "offline" (a federated agent whose request was
    refused by policy was never unreachable), nor an agent not used lately into "not contacted yet"."""
    agent = Agent.objects.unscoped("liveness of a task's agent").filter(pk=agent_id).first()
    return "offline" if agent is None else agent.contact
