"""Every state change of agents. Network work (fetching a card) happens before the transaction opens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import RestrictedError
from django.utils import timezone
from django.utils.text import slugify

from apps.agents.cards import CardError, CardInfo, fetch_card, parse_card, url_has_credentials
from apps.agents.models import Agent, Visibility, validate_agent_slug
from apps.core import audit
from apps.core.http import OutboundBlocked, check_url
from apps.core.permissions import Access

EDITABLE_FIELDS = frozenset({"name", "slug", "description", "version", "url", "visibility", "streaming"})
# What a card refresh sets (`_apply_card`): editable on an agent registered by hand only.
CARD_FIELDS = frozenset({"name", "description", "version", "url", "streaming"})


class AgentActionError(Exception):
    """Bad input for an agent action; nothing was written. `code` and `details` feed the API error shape."""

    def __init__(self, message: str, *, code: str, details: dict[str, Any] | None = None, status: int = 400):
        super().__init__(message)
        self.code = code
        self.details = details or {}
        self.status = status


@dataclass(frozen=True)
class DemoAssignment:
    created: list[Agent]
    existing: list[Agent]  # those the org had, refreshed (the restored ones included)
    restored: list[Agent] = field(default_factory=list)  # of `existing`: deleted (retired) before, back now


def _who(by: Any) -> tuple[Any, Access | None]:
    """`by` is the request's Access (API or console: records the key too) or a user (commands, tests)."""
    if isinstance(by, Access):
        return by.user, by
    return by, None


def _audit(action: str, agent: Agent, by: Any, **details: Any) -> None:
    user, access = _who(by)
    audit.record(f"agent.{action}", org=agent.organization_id, actor=user, target=agent, access=access, **details)


def _fetch(url: str) -> CardInfo:
    try:
        return async_to_sync(fetch_card)(url)
    except OutboundBlocked as exc:
        raise AgentActionError(
            str(exc), code="ssrf_blocked", details={"rule": exc.rule, "host": exc.host, "address": exc.address}
        ) from exc
    except CardError as exc:
        raise AgentActionError(str(exc), code=exc.code, details=exc.details) from exc


def _unique_slug(org: Any, wanted: str, *, exclude: Agent | None = None) -> str:
    base = slugify(wanted)[:70].strip("-") or "agent"
    taken = Agent.with_retired.for_org(org).filter(slug__startswith=base)  # a retired agent keeps its slug
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    used = set(taken.values_list("slug", flat=True))
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def _check_slug_free(org: Any, slug: str, *, exclude: Agent | None = None) -> str:
    try:
        validate_agent_slug(slug)
    except ValidationError as exc:
        raise AgentActionError(exc.messages[0], code="invalid", details={"slug": exc.messages}) from exc
    taken = Agent.with_retired.for_org(org).filter(slug=slug)
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    holder = taken.only("retired_at").first()
    if holder is None:
        return slug
    if holder.retired_at is not None:
        # A deleted agent's row stays for its tasks, out of every list: "already has an agent" named nothing the
        # org could find.
        raise AgentActionError(
            f"The slug '{slug}' belonged to an agent that was deleted; retired slugs stay reserved so old tasks "
            "keep their agent — choose another.",
            code="slug_taken",
            details={"slug": ["Reserved by a deleted agent."]},
            status=409,
        )
    raise AgentActionError(
        f"This organization already has an agent with the slug '{slug}'.",
        code="slug_taken",
        details={"slug": ["Already used in this organization."]},
        status=409,
    )


def _apply_card(agent: Agent, info: CardInfo) -> None:
    agent.name = info.name
    agent.description = info.description
    agent.version = info.version
    agent.url = info.url
    agent.card_url = info.card_url
    agent.card = info.raw
    agent.skills = info.skills
    agent.capabilities = info.capabilities
    agent.protocol_version = info.protocol_version
    agent.last_seen_at = timezone.now()
    agent.last_error = ""


# How many free slugs a registration tries when concurrent ones keep taking the one it chose.
SLUG_ATTEMPTS = 5


def _save_new(agent: Agent, *, slug_from: str | None = None) -> Agent:
    """INSERT a new agent. `slug_from`: its slug was chosen here from that text, not asked for by the caller, so
    a concurrent registration that took it first makes this one take the next free slug, not fail with a 409 for
    a slug the caller never sent."""
    for attempt in range(1, SLUG_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                agent.save()
            return agent
        except IntegrityError as exc:  # two concurrent registrations raced for the same slug
            if slug_from is None or attempt == SLUG_ATTEMPTS:
                raise AgentActionError(
                    f"This organization already has an agent with the slug '{agent.slug}'.",
                    code="slug_taken",
                    status=409,
                ) from exc
            agent.slug = _unique_slug(agent.organization_id, slug_from)
    raise AssertionError("unreachable")  # pragma: no cover


def federated_agent(org: Any, address: str) -> Agent:
    """The org's Agent row for another org's agent reached through federation at `address` (canonical, e.g.
    `echo.globex@berlin`), created on first use: it lets a remote task live among the org's own tasks."""
    existing = Agent.with_retired.for_org(org).filter(federation_address=address).first()
    if existing is not None:
        if existing.retired_at is not None:  # used again after it was deleted: the same row comes back
            existing.retired_at = None
            existing.save(update_fields=["retired_at", "updated_at"])
        return existing
    agent = Agent(
        organization=org,
        name=address,
        slug=_unique_slug(org, f"fed-{address.replace('@', '-at-')}"),
        description="An agent of another organization, reached through federation.",
        federation_address=address,
    )
    try:
        return _save_new(agent)
    except AgentActionError:  # a concurrent first request for the same address created it
        return Agent.objects.for_org(org).get(federation_address=address)


def keep_for_other_orgs(org: Any) -> None:
    """Before `org` is deleted: every other org's tasks on one of its (public) agents move to a retired stand-in of
    that agent in the task's own org — its name, endpoint and card as they were — so their history keeps saying
    which agent ran them, and nothing of theirs refers to the org being deleted. Those tasks held the delete back
    for good (no org can delete a task), so an org whose public agent another org had ever used could never leave.
    Call it inside the deleting transaction, once no such task is unfinished (those still need the agent)."""
    from apps.tasks.models import Task  # the tasks app builds on agents

    foreign = Task.objects.unscoped("tasks of other orgs on this org's agents").filter(agent__organization=org)
    foreign = foreign.exclude(organization=org)
    pairs = foreign.values_list("organization_id", "agent_id").distinct().order_by("organization_id", "agent_id")
    now = timezone.now()
    for other_org_id, agent_id in pairs:
        agent = Agent.with_retired.unscoped("the org being deleted").get(pk=agent_id)
        stand_in = Agent(
            organization_id=other_org_id,
            name=agent.name,
            slug=_unique_slug(other_org_id, f"gone-{agent.slug}"),
            description=f"An agent of {org.name}, which was deleted; kept for this organization's tasks.",
            version=agent.version,
            url=agent.url,
            card_url=agent.card_url,
            card=agent.card,
            skills=agent.skills,
            capabilities=agent.capabilities,
            protocol_version=agent.protocol_version,
            retired_at=now,
        )
        _save_new(stand_in, slug_from=f"gone-{agent.slug}")
        foreign.filter(organization_id=other_org_id, agent_id=agent_id).update(agent=stand_in)


def register_agent_by_url(
    *, org: Any, url: str, by: Any = None, slug: str | None = None, visibility: str = Visibility.PRIVATE
) -> Agent:
    """Fetch the agent's card (agent-card.json, falling back to agent.json), validate it and store the agent."""
    refuse_credentials(url)
    info = _fetch(url)
    with transaction.atomic():
        agent = Agent(organization=org, created_by=_who(by)[0], visibility=visibility)
        _apply_card(agent, info)
        agent.slug = _check_slug_free(org, slug) if slug else _unique_slug(org, info.name)
        _save_new(agent, slug_from=None if slug else info.name)
        _audit("registered", agent, by, card_url=info.card_url)
    return agent


def register_agent_manually(
    *,
    org: Any,
    name: str,
    url: str,
    by: Any = None,
    slug: str | None = None,
    description: str = "",
    version: str = "",
    streaming: bool = False,
    protocol_version: str = "1.0",
    skills: list[dict[str, Any]] | None = None,
    visibility: str = Visibility.PRIVATE,
) -> Agent:
    """Register an agent that publishes no card: the caller states its JSON-RPC endpoint and capabilities."""
    _check_endpoint(url)
    with transaction.atomic():
        agent = Agent(
            organization=org,
            name=name,
            slug=_check_slug_free(org, slug) if slug else _unique_slug(org, name),
            description=description,
            version=version,
            url=url,
            capabilities={"streaming": streaming, "pushNotifications": False},
            skills=skills or [],
            protocol_version=protocol_version,
            visibility=visibility,
            created_by=_who(by)[0],
        )
        _save_new(agent, slug_from=None if slug else name)
        _audit("registered", agent, by, manual=True)
    return agent


def refuse_credentials(url: str) -> None:
    # The URL is stored, shown to the org and logged with every call; A2A agents declare how callers authenticate
    # in their card instead.
    if url_has_credentials(url):
        raise AgentActionError(
            "Leave credentials out of the agent's URL (user:password@): the URL is stored, shown and logged in "
            "plain text.",
            code="invalid",
            details={"rule": "credentials"},
        )


def _check_endpoint(url: str) -> None:
    refuse_credentials(url)
    try:
        check_url(url)
    except OutboundBlocked as exc:
        raise AgentActionError(
            str(exc), code="ssrf_blocked" if exc.rule not in {"invalid_url"} else "invalid", details={"rule": exc.rule}
        ) from exc


def refresh_agent_card(agent: Agent, *, by: Any = None) -> Agent:
    """Re-fetch the card and update the agent; a failure is recorded on the agent and raised."""
    if not agent.card_url:
        raise AgentActionError(
            "This agent was registered without a card, so there is nothing to refresh.", code="no_card"
        )
    try:
        info = _fetch(agent.card_url)
    except AgentActionError as exc:
        record_agent_contact(agent, error=str(exc))
        raise
    with transaction.atomic():
        locked = Agent.objects.for_org(agent.organization_id).select_for_update().get(pk=agent.pk)
        _apply_card(locked, info)
        locked.save()
        _audit("card_refreshed", locked, by)
    return locked


def update_agent(agent: Agent, *, by: Any = None, **changes: Any) -> Agent:
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise AgentActionError(f"Not editable: {', '.join(sorted(unknown))}.", code="invalid")
    refused = {"url", "streaming"} & set(changes)
    if changes.get("visibility", Visibility.PRIVATE) != Visibility.PRIVATE:
        refused.add("visibility")
    if agent.is_federated and refused:
        # It is another org's agent: its endpoint is the federation address, and listing it in this instance's
        # marketplace would let third parties send it tasks in this org's name.
        raise AgentActionError(
            "An agent reached through federation keeps its address and stays private.",
            code="invalid",
            details={field: ["Not editable on a federated agent."] for field in sorted(refused)},
        )
    from_card = sorted(CARD_FIELDS & set(changes)) if agent.card_url else []
    if from_card:
        # A refresh (the API, the admin, assigning the demo agents again) rewrites them from the card: an edit
        # was accepted and then silently undone.
        raise AgentActionError(
            f"{', '.join(from_card)} of a card-registered agent come from its card, and a refresh would overwrite "
            "an edit: change the card and refresh it (the slug and the visibility are yours to change).",
            code="invalid",
            details={field: ["Set by the agent card."] for field in from_card},
        )
    if "url" in changes:
        _check_endpoint(changes["url"])
    if "visibility" in changes and changes["visibility"] not in Visibility.values:
        raise AgentActionError("Unknown visibility.", code="invalid", details={"visibility": ["Unknown value."]})
    changed = sorted(changes)
    with transaction.atomic():
        locked = Agent.objects.for_org(agent.organization_id).select_for_update().get(pk=agent.pk)
        if "slug" in changes and changes["slug"] != locked.slug:
            _check_slug_free(locked.organization_id, changes["slug"], exclude=locked)
        # Old and new values, as org.updated records them: "visibility" alone did not say whether the agent was
        # just opened to every org or closed again. Descriptions only by name: they can be long.
        values: dict[str, list[Any]] = {}
        if "streaming" in changes:
            streaming = bool(changes.pop("streaming"))
            values["streaming"] = [bool(locked.capabilities.get("streaming")), streaming]
            locked.capabilities = {**locked.capabilities, "streaming": streaming}
        for name, value in changes.items():
            if name != "description":
                values[name] = [getattr(locked, name), value]
            setattr(locked, name, value)
        locked.save()
        changed_values = {name: pair for name, pair in values.items() if pair[0] != pair[1]}
        _audit("updated", locked, by, fields=changed, changes=changed_values)
    return locked


def set_visibility(agent: Agent, visibility: str, *, by: Any = None) -> Agent:
    return update_agent(agent, by=by, visibility=visibility)


def delete_agent(agent: Agent, *, by: Any = None) -> bool:
    """Delete the agent; one that tasks refer to is retired instead (see Agent). Returns whether the row went."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                _audit("deleted", agent, by, slug=agent.slug)  # while the row (the audit's target) still has its id
                agent.delete()
        except RestrictedError:
            # Tasks (also other orgs' when it was public) keep their agent: the row stays for them, out of sight.
            # It was a 409 "still has tasks", and no org can delete tasks: an agent that ever ran one stayed
            # forever, listed and usable.
            agent.retired_at = timezone.now()
            agent.visibility = Visibility.PRIVATE
            agent.save(update_fields=["retired_at", "visibility", "updated_at"])
            _audit("retired", agent, by, slug=agent.slug)
            return False
        return True


def assign_demo_agents(*, org: Any, by: Any = None) -> DemoAssignment:
    """Give the org every built-in demo agent (served by this instance under /demo-agents/). Idempotent: agents
    the org already has are refreshed to the current card (e.g. after HERMES_PUBLIC_URL changed), never doubled."""
    from apps.agents.demo.specs import DEMO_AGENTS, demo_card_dict

    created: list[Agent] = []
    existing: list[Agent] = []
    restored: list[Agent] = []
    with transaction.atomic():
        # Lock the org's demo rows so two concurrent assignments serialize instead of racing on the constraint.
        have = {
            agent.demo_key: agent
            for agent in Agent.with_retired.for_org(org).filter(is_demo=True).select_for_update().order_by("pk")
        }
        for spec in DEMO_AGENTS:
            info = parse_card(demo_card_dict(spec), check_interface=False)
            info = CardInfo(**{**info.__dict__, "card_url": f"{info.url}.well-known/agent-card.json"})
            agent = have.get(spec.slug)
            if agent is None:
                agent = Agent(organization=org, created_by=_who(by)[0], is_demo=True, demo_key=spec.slug)
                _apply_card(agent, info)
                agent.slug = _unique_slug(org, f"demo-{spec.slug}")
                agent.save()
                created.append(agent)
            else:
                _apply_card(agent, info)
                if agent.retired_at is not None:  # a demo agent deleted while it had tasks: assigning brings it back
                    agent.retired_at = None
                    restored.append(agent)
                agent.save()
                existing.append(agent)
        for agent in created:
            _audit("registered", agent, by, demo=agent.demo_key)
        for agent in restored:
            _audit("restored", agent, by, demo=agent.demo_key)
    return DemoAssignment(created=created, existing=existing, restored=restored)


def record_agent_contact(agent: Agent, *, error: str | None = None) -> None:
    """Online state, written by whoever talked to the agent (card refresh, task worker). Not audited: telemetry.

    A success within the last minute is not re-written, so a busy agent costs no write per call.
    """
    now = timezone.now()
    rows = Agent.objects.for_org(agent.organization_id).filter(pk=agent.pk)
    if error:
        rows.update(last_error=error[:2000], last_error_at=now)
        agent.last_error, agent.last_error_at = error[:2000], now
        return
    if agent.last_seen_at and not agent.last_error and (now - agent.last_seen_at).total_seconds() < 60:
        return
    rows.update(last_seen_at=now, last_error="")
    agent.last_seen_at, agent.last_error = now, ""
