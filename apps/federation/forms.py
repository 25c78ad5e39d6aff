from __future__ import annotations

from typing import Any

from django import forms

from apps.core import jsonutil
from apps.core.validators import display_name
from apps.federation.models import Effect, validate_base_url, validate_peer_name


class PeerForm(forms.Form):
    name = forms.SlugField(
        max_length=60,
        validators=[validate_peer_name],
        help_text="How this instance calls the peer (addresses use org@name). Fixed once added: to rename a link, "
        "add a new peer.",
    )
    base_url = forms.CharField(max_length=300, validators=[validate_base_url], label="Base URL")
    local_name = forms.SlugField(
        max_length=60,
        validators=[validate_peer_name],
        help_text="The name the peer uses for this instance. Fixed once added, like the name.",
    )


class ContactForm(forms.Form):
    name = forms.CharField(max_length=120, validators=[display_name])
    address = forms.CharField(max_length=200, help_text="org, agent.org, org@peer or agent.org@peer")
    notes = forms.CharField(required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))


class PolicyForm(forms.Form):
    remote = forms.CharField(max_length=200, help_text="An address, or * (everyone), or *@peer (everyone on a peer).")
    effect = forms.ChoiceField(choices=Effect.choices)
    local_agent = forms.SlugField(
        required=False,
        max_length=60,
        help_text="The slug of one of your organization's agents (as on the Agents page); empty: the whole "
        "organization.",
    )
    reason = forms.CharField(required=False, max_length=200)


class SendForm(forms.Form):
    recipient = forms.CharField(max_length=200, help_text="org, agent.org, org@peer or agent.org@peer")
    # An example as a placeholder, not a value: a prefilled payload had to be deleted before every send.
    payload = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "class": "mono", "placeholder": '{"text": "hello"}'}),
        help_text="A JSON object.",
    )

    def clean_payload(self) -> dict[str, Any]:
        # A payload nested past the recursion limit was a 500 here: the shared parse turns it into a form error.
        return jsonutil.form_json_object(
            self.cleaned_data["payload"], 'The payload is a JSON object, e.g. {"text": "hello"}.'
        )


class RemoteTaskForm(forms.Form):
    agent = forms.CharField(
        max_length=200, label="Remote agent", help_text="agent.org on this instance, or agent.org@peer on another."
    )
    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 3}), max_length=100_000)

    def message(self) -> dict[str, Any]:
        return {"role": "user", "parts": [{"kind": "text", "text": self.cleaned_data["text"]}]}
