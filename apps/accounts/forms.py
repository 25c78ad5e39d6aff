from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import BaseUserCreationForm


class RegistrationForm(BaseUserCreationForm):
    """Email, name and a password (typed twice) checked by AUTH_PASSWORD_VALIDATORS."""

    class Meta:
        model = get_user_model()
        fields = ("email", "name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].widget.attrs.update(autocomplete="email", autofocus=True)
        self.fields["name"].widget.attrs.update(autocomplete="name")
        self.fields["name"].help_text = "Shown to the other members of your organizations."

    def clean_email(self) -> str:
        email = str(self.cleaned_data["email"]).strip().lower()
        if get_user_model()._default_manager.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists: sign in or reset its password.")
        return email
