from __future__ import annotations

from django import forms

from apps.agents.models import Visibility


class AgentURLForm(forms.Form):
    url = forms.URLField(
        label="Agent URL",
        max_length=500,
        assume_scheme="https",
        help_text="The agent's base URL (Hermes looks for /.well-known/agent-card.json) or the card's own URL.",
        widget=forms.URLInput(attrs={"placeholder": "https://agent.example.com", "autofocus": True}),
    )


class AgentRegisterForm(AgentURLForm):
    slug = forms.SlugField(required=False, max_length=80, help_text="Empty: derived from the card's name.")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)


class MarketplaceSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search public agents")
