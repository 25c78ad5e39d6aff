"""Account state changes: registration, password change, password reset. The API and the console call these.

Bad input raises `django.core.exceptions.ValidationError` with per-field messages (field names as in the API:
`email`, `password`, `current_password`, `new_password`, `token`); forms can copy them with `form.add_error`,
and the API's exception handler turns them into a 400 with per-field details. Nothing is written on error.

Password-reset tokens are Django's `default_token_generator`: stateless (an HMAC of the user's password hash,
last login and a timestamp), so a token dies when the password changes or after `PASSWORD_RESET_TIMEOUT`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

from apps.core import audit
from apps.core.validators import visible_email

User = get_user_model()


def _validate_password(password: str, user: Any, field: str) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as error:
        raise ValidationError({field: list(error.messages)}) from None


@transaction.atomic
def register_user(*, email: str, password: str, name: str = "") -> Any:
    """Create an active account; the password must pass AUTH_PASSWORD_VALIDATORS."""
    email = User.objects.normalize_email(email.strip()).lower()
    try:
        visible_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from None
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": ["An account with this email already exists; sign in or reset the password."]})
    _validate_password(password, User(email=email, name=name), "password")
    try:
        with transaction.atomic():
            user = User.objects.create_user(email, password, name=name)
    except IntegrityError:  # a concurrent registration of the same address
        raise ValidationError({"email": ["An account with this email already exists."]}) from None
    audit.record("user.registered", actor=user, target=user)
    return user


@transaction.atomic
def change_password(*, user: Any, current_password: str, new_password: str) -> Any:
    """Requires the current password. Callers with a session must then call `update_session_auth_hash`."""
    if not user.check_password(current_password):
        raise ValidationError({"current_password": ["The current password is not correct."]})
    _validate_password(new_password, user, "new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    audit.record("user.password_changed", actor=user, target=user)
    return user


def password_reset_url(user: Any) -> str:
    """The console's reset page for this user (uid and token also work with the API's reset/confirm)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    path = reverse("accounts:password_reset_confirm", kwargs={"uidb64": uid, "token": token})
    return f"{settings.HERMES_PUBLIC_URL}{path}"


@transaction.atomic
def request_password_reset(*, email: str) -> None:
    """Email a reset link if an active account has this address. Says nothing either way (no account probing)."""
    user = User.objects.filter(email__iexact=email.strip(), is_active=True).first()
    if user is None or not user.has_usable_password():
        return
    url = password_reset_url(user)
    minutes = settings.PASSWORD_RESET_TIMEOUT // 60
    audit.record("user.password_reset_requested", actor=user, target=user)
    transaction.on_commit(
        lambda: send_mail(
            "Reset your Hermes password",
            f"Someone (hopefully you) asked to reset the password of {user.email}.\n\n"
            f"Choose a new one within {minutes} minutes: {url}\n\nIf it was not you, ignore this message.",
            None,
            [user.email],
        )
    )


def user_for_reset(uidb64: str, token: str) -> Any | None:
    """The account a reset link names, if the token is still valid (console pages use it to show the form)."""
    try:
        user = User.objects.get(pk=force_str(urlsafe_base64_decode(uidb64)), is_active=True)
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        return None
    return user if default_token_generator.check_token(user, token) else None


@transaction.atomic
def reset_password(*, uidb64: str, token: str, new_password: str) -> Any:
    user = user_for_reset(uidb64, token)
    if user is None:
        raise ValidationError({"token": ["This reset link is invalid or has expired; request a new one."]})
    _validate_password(new_password, user, "new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    audit.record("user.password_reset", actor=user, target=user)
    return user
