from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.text import slugify

from apps.core.permissions import Role
from apps.core.validators import display_name, visible_email
from apps.orgs.actions import org_slug, slug_refusal
from apps.orgs.models import MAX_KEY_REQUESTS_PER_MINUTE, Plan


class OrganizationCreateForm(forms.Form):
    name = forms.CharField(max_length=120, validators=[display_name], widget=forms.TextInput(attrs={"autofocus": True}))
    slug = forms.CharField(
        max_length=60,
        required=False,
        help_text="Lowercase letters, digits and hyphens; used in URLs and federation addresses. "
        "Leave empty to derive it from the name.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "name" in data and not self.has_error("slug"):
            slug = data.get("slug") or slugify(data["name"])[:60].strip("-_").replace("_", "-")
            if not slug:
                self.add_error("slug", "Choose a slug: the name has no letters or digits to derive one from.")
                return data
            try:
                slug = org_slug(slug)
            except ValidationError as error:
                self.add_error("slug", error.message_dict["slug"])
                return data
            if (refused := slug_refusal(slug)) is not None:
                self.add_error("slug", refused)
            data["slug"] = slug
        return data


def _role_choices(allowed: list[str]) -> list[tuple[str, str]]:
    return [(value, label) for value, label in Role.choices if value in allowed]


class InviteForm(forms.Form):
    email = forms.EmailField(validators=[visible_email])
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args: Any, roles: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(roles)  # type: ignore[attr-defined]


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class APIKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, validators=[display_name], help_text="What uses this key, e.g. “CI pipeline”."
    )
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        help_text="A key can never do more than your own role allows.",
    )
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires in (days)", help_text="Empty: never expires."
    )
    rate_limit_per_minute = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_KEY_REQUESTS_PER_MINUTE,
        label="Rate limit (requests per minute)",
        help_text="Optional; the plan's limit applies anyway.",
    )

    def __init__(self, *args: Any, scopes: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = scopes  # type: ignore[attr-defined]


class RotateKeyForm(forms.Form):
    GRACE_CHOICES = [(0, "Immediately"), (1, "1 hour"), (24, "24 hours"), (168, "7 days")]
    grace_hours = forms.TypedChoiceField(
        choices=GRACE_CHOICES, coerce=int, initial=24, label="Old key keeps working for"
    )


class OrganizationSettingsForm(forms.Form):
    name = forms.CharField(max_length=120, validators=[display_name])
    plan = forms.ChoiceField(choices=Plan.choices, help_text="Only owners change the plan.")

    def __init__(self, *args: Any, can_rename: bool, can_bill: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].disabled = not can_rename
        self.fields["plan"].disabled = not can_bill


class DeleteOrganizationForm(forms.Form):
    confirm = forms.CharField(label="Type the organization's slug to confirm")

    def __init__(self, *args: Any, slug: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slug = slug

    def clean_confirm(self) -> str:
        value = str(self.cleaned_data["confirm"]).strip()
        if value != self.slug:
            raise forms.ValidationError(f"Type “{self.slug}” exactly to delete the organization.")
        return value
