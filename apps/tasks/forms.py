from __future__ import annotations

from typing import Any

from django import forms

from apps.core import jsonutil
from apps.tasks.actions import MAX_JSON_DEPTH, TaskInputTooLarge, json_depth
from apps.tasks.models import TaskState


class TaskForm(forms.Form):
    agent = forms.ChoiceField(
        label="Agent",
        # An agent listed when the page loaded and made private or deleted since (another org's public one).
        error_messages={
            "invalid_choice": "This agent is no longer available to your organization (made private or deleted): "
            "choose another."
        },
    )
    text = forms.CharField(
        label="Message",
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "What should the agent do?"}),
        required=False,
        max_length=100_000,
    )
    structured = forms.CharField(
        label="Structured data (JSON object, optional)",
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "placeholder": '{"expression": "2 + 3 * 4"}'}),
        required=False,
        help_text="Sent as a data part next to the text, for agents that take structured input.",
    )

    def __init__(self, *args: Any, agents: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agents = {str(a.pk): a for a in agents}
        # Grouped by owning org: the org's own agents and the public ones from the marketplace.
        groups: dict[str, list[tuple[str, str]]] = {}
        for agent in agents:
            # With the slug: two agents may share a name (the same card registered twice), never a slug.
            groups.setdefault(agent.organization.name, []).append((str(agent.pk), f"{agent.name} ({agent.slug})"))
        self.fields["agent"].choices = [("", "Choose an agent…"), *groups.items()]  # type: ignore[attr-defined]

    def clean_agent(self) -> Any:
        return self.agents[self.cleaned_data["agent"]]

    def clean_structured(self) -> dict[str, Any] | None:
        raw = str(self.cleaned_data.get("structured") or "").strip()
        if not raw:
            return None
        value = jsonutil.form_json_object(raw, 'Give a JSON object, e.g. {"key": "value"}.')
        if (depth := json_depth(value)) > MAX_JSON_DEPTH:
            raise forms.ValidationError(f"This nests {depth} levels deep; agents accept at most {MAX_JSON_DEPTH}.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # A field already refused (a message over the length limit, JSON that is no object) was given: saying
        # "write a message" under it as well contradicted it.
        given = self.has_error("text") or self.has_error("structured")
        if not given and not str(data.get("text") or "").strip() and not data.get("structured"):
            self.add_error("text", "Write a message (or give structured data).")
        return data

    def add_too_large_error(self, exc: TaskInputTooLarge) -> None:
        """The input over the size limit, said under the field that makes most of it: it was always under the
        message, even for a one-byte message beside 270 KB of structured data."""
        text = str(self.cleaned_data.get("text") or "")
        data = self.cleaned_data.get("structured")
        sizes = {
            "text": jsonutil.encoded_size(text) if text.strip() else 0,
            "structured": jsonutil.encoded_size(data) if data else 0,
        }
        field = "structured" if sizes["structured"] > sizes["text"] else "text"
        if sizes["text"] and sizes["structured"]:
            larger = "structured data" if field == "structured" else "message"
            error = (
                f"The message and the structured data are {exc.size} bytes together, {sizes[field]} of them in the "
                f"{larger}; the limit is {exc.limit} bytes."
            )
        else:
            error = f"The task input is {exc.size} bytes; the limit is {exc.limit} bytes."
        self.add_error(field, error)

    def message(self) -> dict[str, Any]:
        """The A2A message the form describes: a text part and/or a data part."""
        parts: list[dict[str, Any]] = []
        if str(self.cleaned_data.get("text") or "").strip():
            parts.append({"kind": "text", "text": self.cleaned_data["text"]})
        if self.cleaned_data.get("structured"):
            parts.append({"kind": "data", "data": self.cleaned_data["structured"]})
        return {"role": "user", "parts": parts}


class FilterChoiceField(forms.ChoiceField):
    """A filter's choice, read from the query string: a refused value is quoted at most 40 characters long (a link
    can carry thousands, and the message repeated every one of them)."""

    def validate(self, value: Any) -> None:
        try:
            super().validate(value)
        except forms.ValidationError as error:
            if error.code != "invalid_choice" or len(str(value)) <= 40:
                raise
            shown = f"{str(value)[:39]}…"
            raise forms.ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice", params={"value": shown}
            ) from None


class TaskFilterForm(forms.Form):
    status = FilterChoiceField(choices=[("", "Any status"), *TaskState.choices], required=False)
    agent = FilterChoiceField(required=False)

    def __init__(self, *args: Any, agents: list[Any], org: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Grouped by owning org, the org's own first (as "Send a task" groups them): a marketplace agent of another
        # org may have the same name and slug as one of its own.
        groups: dict[Any, tuple[str, list[tuple[str, str]]]] = {}
        for agent in sorted(agents, key=lambda a: a.organization_id != org.pk):
            if agent.organization_id != org.pk:
                # Not public (any more): whether its owner made it private or deleted it is the owner's to know, as
                # in the API (`unavailable`, apps.tasks.actions.check_agent_usable).
                usable = agent.retired_at is None and agent.is_usable_by(org)
                gone = "" if usable else " (no longer available)"
            else:
                gone = " (retired)" if agent.retired_at else ""
            label = f"{agent.name} ({agent.slug}){gone}"
            groups.setdefault(agent.organization_id, (agent.organization.name, []))[1].append((str(agent.pk), label))
        self.fields["agent"].choices = [("", "Any agent"), *groups.values()]  # type: ignore[attr-defined]


class FollowUpForm(forms.Form):
    text = forms.CharField(
        label="Reply",
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=100_000,
        error_messages={"required": "Write a reply first."},
    )
