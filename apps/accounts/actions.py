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
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

from apps.core import audit
from apps.core.errors import Conflict
from apps.core.mail import send_later
from apps.core.permissions import Role, staff_access
from apps.core.validators import visible_email
from apps.orgs import actions as org_actions
from apps.orgs.models import Membership, Organization

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
    # From a job, after commit: an SMTP server down or slow must not show in this request's answer or its timing,
    # which would tell an existing address from an unknown one.
    send_later(
        "Reset your Hermes password",
        f"Someone (hopefully you) asked to reset the password of {user.email}.\n\n"
        f"Choose a new one within {minutes} minutes: {url}\n\nIf it was not you, ignore this message.",
        [user.email],
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


# --- Staff (Django admin) -------------------------------------------------------------------------------------
# A person's memberships are their orgs' business: they end through apps.orgs.actions.remove_member, as from the
# console and the API, so the rules that hold whoever acts (an org keeps its last owner) hold here too, and each
# org's audit log says who went and by whose hand. Staff act in each org with an owner's rights (staff_access).


def _memberships(user: Any) -> list[Membership]:
    # Org by org in pk order: remove_member locks each org's row, and two deletions must not lock two orgs in
    # opposite orders.
    rows = Membership.objects.unscoped("staff: a person's memberships span orgs").filter(user=user)
    return list(rows.select_related("organization", "user").order_by("organization_id", "pk"))


def _refuse_orphaning(user: Any, memberships: list[Membership]) -> None:
    """Refuse (409 last_owner, naming the orgs) when `user` is the only active owner of any of their orgs: once
    they are deactivated or deleted, nobody could sign in to manage it. (An owner whose account is inactive
    still counts as one for remove_member, so it alone would let such an org lose its last usable owner.)"""
    owned = [m.organization for m in memberships if m.role == Role.OWNER]
    if not owned:
        return
    # The orgs' rows first, in pk order, as every membership change takes them (see orgs.actions._lock_org): an
    # owner demoted, removed or deactivated meanwhile is seen below.
    pks = [org.pk for org in owned]
    list(Organization.objects.select_for_update(no_key=True).filter(pk__in=pks).order_by("pk").values_list("pk"))
    others = Membership.objects.unscoped("staff: the owners of the person's orgs").filter(
        organization__in=pks, role=Role.OWNER, user__is_active=True
    )
    covered = set(others.exclude(user=user).values_list("organization_id", flat=True))
    orphaned = [org.slug for org in owned if org.pk not in covered]
    if orphaned:
        raise Conflict(
            f"{user.email} is the last active owner of {', '.join(orphaned)}: make someone else an owner first.",
            code="last_owner",
            details={"organizations": orphaned},
        )


@transaction.atomic
def staff_delete_user(*, user: Any, actor: Any) -> None:
    """Delete an account: it leaves each org through remove_member (which audits it and revokes the invitations
    it sent), then goes. Refused, nothing deleted, while it is an org's last (active) owner."""
    memberships = _memberships(user)
    _refuse_orphaning(user, memberships)
    for membership in memberships:
        org_actions.remove_member(access=staff_access(membership.organization, actor), membership=membership)
    # The account's row last, locked: joining an org inserts a membership, which waits for this lock, so none
    # can slip in between the removals and the delete (and cascade away unaudited). One that committed before it
    # is refused rather than removed here: removing it would take its org's lock after the account's.
    User.objects.select_for_update().get(pk=user.pk)
    joined = [m.organization.slug for m in _memberships(user)]
    if joined:
        raise Conflict(f"{user.email} joined {', '.join(joined)} meanwhile: try again.", code="joined_meanwhile")
    audit.record("user.deleted", actor=actor, target=user, email=user.email, by_staff=True)
    User.objects.filter(pk=user.pk).delete()


@transaction.atomic
def staff_set_user_active(*, user: Any, active: bool, actor: Any) -> Any:
    """Deactivate (or reactivate) an account; deactivating is refused while it is an org's last active owner."""
    if not active:
        _refuse_orphaning(user, _memberships(user))
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active != active:
        user.is_active = active
        user.save(update_fields=["is_active"])
        audit.record(
            "user.deactivated" if not active else "user.reactivated",
            actor=actor,
            target=user,
            email=user.email,
            by_staff=True,
        )
    return user
