from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import slugify

from apps.orgs.models import Organization


class OrganizationCreateForm(forms.Form):
    name = forms.CharField(max_length=120, widget=forms.TextInput(attrs={"autofocus": True}))
    slug = forms.SlugField(
        max_length=60,
        required=False,
        help_text="Lowercase letters, digits and hyphens; used in URLs and federation addresses. "
        "Leave empty to derive it from the name.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "name" in data and not self.has_error("slug"):
            slug = data.get("slug") or slugify(data["name"])[:60]
            if not slug:
                self.add_error("slug", "Choose a slug: the name has no letters or digits to derive one from.")
            elif Organization.objects.filter(slug=slug).exists():
                self.add_error("slug", f"The slug '{slug}' is taken; choose another.")
            data["slug"] = slug
        return data
