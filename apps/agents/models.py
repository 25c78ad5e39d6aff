from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.text import slugify

from apps.core.tenancy import OrgOwnedModel, OrgScopedManager
from apps.core.validators import display_name, service_url_parts

# An agent counts as online when Hermes reached it without error this recently.
ONLINE_WINDOW = timedelta(minutes=10)


def skills_search_text(skills: Any) -> str:
    """Each skill's name, description and tags, one per line: the values a person searches skills by, never the
    JSON's key names. Anything but a list of objects (the column holds whatever a card said) contributes nothing."""
    values: list[str] = []
    for skill in skills if isinstance(skills, list) else []:
        if not isinstance(skill, dict):
            continue
        tags = skill.get("tags")
        for value in (skill.get("name"), skill.get("description"), *(tags if isinstance(tags, list) else [])):
            if isinstance(value, str) and value.strip():
                values.append(" ".join(value.split()))  # one line each, so a match never spans two values
    return "\n".join(values)


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private to its organization"
    PUBLIC = "public", "Public (listed in the marketplace, usable by every org)"


class ActiveAgentManager(OrgScopedManager):
    """Agents that exist for their org: not the retired ones."""

    def get_queryset(self) -> Any:
        return super().get_queryset().filter(retired_at=None)


# What Hermes keeps of an agent's own words, whether typed here or read from its card (longer is refused, never
# cut): the marketplace lists every public agent's description.
NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 4000
SLUG_MAX_LENGTH = 80


AGENT_URL_PROBLEM = "Enter the agent's URL: http:// or https://, a host, an optional port and path."


def validate_agent_url(value: str) -> None:
    """An http(s) URL with a host. Unlike Django's URLValidator, a host without a dot is accepted: agents on one
    Docker or cluster network are reached by service name (`http://summarizer:8080/`), as peers are (and as a
    card's interface URL already was). Where it may connect is the SSRF guard's to say, when it does."""
    # (Credentials in it are refused by the actions, in their own words: refuse_credentials.)
    service_url_parts(value, AGENT_URL_PROBLEM)


def validate_agent_slug(value: str) -> None:
    """An agent's slug is what `slugify` keeps: lowercase letters, digits, underscores and single hyphens. One
    message for the API, the console and the actions alike: Django's and DRF's SlugField said "letters (any case),
    numbers, underscores or hyphens", and `My_Echo`, written as they advised, was then refused in other words."""
    if slugify(value) != value or not value:
        raise ValidationError(
            f"'{value[:SLUG_MAX_LENGTH]}' is not a slug: use lowercase letters, digits, underscores and single "
            "hyphens, starting and ending with a letter or digit, e.g. my-echo.",
            code="invalid",
        )


VERSION_MAX_LENGTH = 50


class Agent(OrgOwnedModel):
    """An A2A agent an org registered (by its Agent Card, or by hand) or one of Hermes' built-in demo agents.

    Deleting an agent that tasks refer to (its own org's, or other orgs' when it was public) retires it instead:
    tasks keep their agent for their history, so the row stays, but `Agent.objects` no longer sees it — it is in
    no list, takes no task and answers 404 like a deleted one. `Agent.with_retired` sees every row (slugs stay
    unique among them; assigning demo agents or reaching a federated address again brings a retired one back).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=NAME_MAX_LENGTH, validators=[display_name])
    slug = models.SlugField(max_length=80)
    description = models.TextField(blank=True, max_length=DESCRIPTION_MAX_LENGTH)
    version = models.CharField(max_length=VERSION_MAX_LENGTH, blank=True)
    # The JSON-RPC endpoint Hermes calls (the card's JSONRPC interface).
    url = models.URLField(max_length=500)
    # Set for an agent of another org reached through federation (`echo.globex@berlin`): Hermes does not call it
    # over A2A; its tasks travel as federation task requests and their timeline comes back as task results.
    federation_address = models.CharField(max_length=200, blank=True, default="")
    # Where the card was fetched; empty for agents registered by hand.
    card_url = models.URLField(max_length=500, blank=True)
    card = models.JSONField(default=dict, blank=True)
    skills = models.JSONField(default=list, blank=True)
    # What marketplace search matches in the skills (their names, descriptions and tags), kept by save(): searched
    # as JSON text, `q=tags` matched every agent with a skill, and SQLite's text held `Ü` as `\u00dc`.
    skills_text = models.TextField(blank=True, default="", editable=False)
    capabilities = models.JSONField(default=dict, blank=True)
    protocol_version = models.CharField(max_length=20, default="1.0")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    is_demo = models.BooleanField(default=False)
    # Which built-in demo agent this row is (its slug under /demo-agents/); empty for every other agent.
    demo_key = models.CharField(max_length=40, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[ActiveAgentManager] = ActiveAgentManager()
    with_retired: ClassVar[OrgScopedManager] = OrgScopedManager()

    class Meta:
        constraints = [
            # Slugs name agents inside an org (URLs, the console); also serves the per-org slug lookup.
            models.UniqueConstraint(fields=["organization", "slug"], name="agents_agent_unique_slug"),
            # One row per demo agent and org: makes "assign demo agents" idempotent, even when run concurrently.
            models.UniqueConstraint(
                fields=["organization", "demo_key"],
                condition=~models.Q(demo_key=""),
                name="agents_agent_unique_demo",
            ),
        ]
        indexes = [
            # The marketplace: public agents of every org, newest first.
            models.Index(
                fields=["-created_at"],
                condition=models.Q(visibility="public"),
                name="agents_agent_public_idx",
            ),
            # An org's own list, newest first (cursor pagination).
            models.Index(fields=["organization", "-created_at"], name="agents_agent_org_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.skills_text = skills_search_text(self.skills)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "skills" in update_fields:
            kwargs["update_fields"] = {*update_fields, "skills_text"}
        super().save(*args, **kwargs)

    @property
    def streaming(self) -> bool:
        return bool(self.capabilities.get("streaming"))

    @property
    def push_notifications(self) -> bool:
        return bool(self.capabilities.get("pushNotifications"))

    @property
    def is_online(self) -> bool:
        if self.last_seen_at is None:
            return False
        if self.last_error_at is not None and self.last_error_at >= self.last_seen_at:
            return False
        return timezone.now() - self.last_seen_at < ONLINE_WINDOW

    @property
    def contact(self) -> str:
        """What the agent badge says (templates/agents/online_badge.html, the live task page): "online" (reached
        without error within ONLINE_WINDOW), "offline" (its last contact failed), "idle" (reached without error,
        but not that recently: it said "not contacted yet" beside its last-seen time) or "never" (not contacted)."""
        if self.is_online:
            return "online"
        if self.last_error:
            return "offline"
        return "idle" if self.last_seen_at is not None else "never"

    @property
    def skill_names(self) -> list[str]:
        return [str(skill.get("name") or skill.get("id") or "") for skill in self.skills if isinstance(skill, dict)]

    @property
    def is_federated(self) -> bool:
        return bool(self.federation_address)

    def is_usable_by(self, org: Any) -> bool:
        org_id = getattr(org, "pk", org)
        return self.organization_id == org_id or self.visibility == Visibility.PUBLIC
