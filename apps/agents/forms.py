from __future__ import annotations

from typing import Any

from django import forms

from apps.agents.models import (
    AGENT_URL_PROBLEM,
    DESCRIPTION_MAX_LENGTH,
    NAME_MAX_LENGTH,
    SLUG_MAX_LENGTH,
    Visibility,
    validate_agent_slug,
    validate_agent_url,
)
from apps.core.validators import display_name


class AgentURLField(forms.URLField):
    """Django's URLField (which adds a missing https://) held to the agents' URL rule: a service name like
    `http://summarizer:8080/` is a host too."""

    default_validators = [validate_agent_url]
    default_error_messages = {"invalid": AGENT_URL_PROBLEM}  # what URLField's own parsing refuses says the same


class AgentURLForm(forms.Form):
    url = AgentURLField(
        label="Agent URL",
        max_length=500,
        assume_scheme="https",
        help_text="The agent's base URL (Hermes looks for /.well-known/agent-card.json) or the card's own URL.",
        widget=forms.URLInput(attrs={"placeholder": "https://agent.example.com", "autofocus": True}),
    )


class AgentSlugField(forms.CharField):
    """An agent's slug, optional (empty: derived from the name), refused with the message that states the rule."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, max_length=SLUG_MAX_LENGTH, validators=[validate_agent_slug], **kwargs)


class AgentRegisterForm(AgentURLForm):
    slug = AgentSlugField(help_text="Empty: derived from the card's name.")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)


class AgentManualForm(forms.Form):
    """An agent that publishes no Agent Card: its JSON-RPC endpoint and capabilities are stated by hand."""

    name = forms.CharField(max_length=NAME_MAX_LENGTH, validators=[display_name])
    url = AgentURLField(
        label="JSON-RPC endpoint",
        max_length=500,
        assume_scheme="https",
        help_text="Where the agent answers A2A JSON-RPC calls (SendMessage, GetTask, …).",
    )
    description = forms.CharField(
        required=False, max_length=DESCRIPTION_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 2})
    )
    protocol_version = forms.ChoiceField(
        label="A2A version", choices=[("1.0", "1.0"), ("0.3", "0.3 (older method names)")], initial="1.0"
    )
    streaming = forms.BooleanField(
        required=False, help_text="It supports SendStreamingMessage (server-sent events); otherwise Hermes polls."
    )
    slug = AgentSlugField(help_text="Empty: derived from the name.")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)


class MarketplaceSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search public agents")
