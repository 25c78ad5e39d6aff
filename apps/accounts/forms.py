from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

from apps.core.validators import display_name, visible_email


class _PasswordPair(forms.Form):
    """Two password fields that must match; strength is checked by the account action (one set of rules)."""

    password_fields = ("password1", "password2")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, second = (data.get(name) for name in self.password_fields)
        if first and second and first != second:
            self.add_error(self.password_fields[1], "The two passwords do not match.")
        return data


class RegistrationForm(_PasswordPair):
    email = forms.EmailField(
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}), validators=[visible_email]
    )
    name = forms.CharField(
        max_length=150,
        required=False,
        validators=[display_name],
        help_text="Shown to the other members of your organizations.",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password confirmation",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Enter the same password again.",
    )


class SignInForm(AuthenticationForm):
    # Django's text says both fields "may be case-sensitive": emails are compared ignoring case here.
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct email and password (the password is case-sensitive).",
    }


class PasswordResetRequestForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}))


class NewPasswordForm(_PasswordPair):
    password_fields = ("new_password1", "new_password2")
    new_password1 = forms.CharField(
        label="New password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "autofocus": True}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    new_password2 = forms.CharField(
        label="New password confirmation",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )


class PasswordChangeForm(NewPasswordForm):
    current_password = forms.CharField(
        label="Current password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )
    field_order = ["current_password", "new_password1", "new_password2"]
