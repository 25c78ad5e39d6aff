from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from apps.core.validators import display_name


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def get_by_natural_key(self, username: str | None) -> User:
        # Signing in: emails are stored lowercased and registration, password reset and invitations all match them
        # case-insensitively, so `Alice@Example.com` signs in too (Django's ModelBackend matches exactly). Rows from
        # before the case-insensitive constraint may differ only in case: the exact spelling decides then, and
        # without one the sign-in fails like an unknown email (it was a 500 for both people).
        matches = list(self.filter(email__iexact=username)[:2])
        exact = [user for user in matches if user.email == username]
        if len(matches) == 1 or exact:
            return (exact or matches)[0]
        raise self.model.DoesNotExist(f"no single account has the email {username!r}")

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """Email is the login; there is no username."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True, validators=[display_name])
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        constraints = [
            # One account per address whatever its case: sign-in, registration and invitations match emails
            # case-insensitively, so two rows differing only in case made sign-in ambiguous.
            models.UniqueConstraint(
                Lower("email"),
                name="accounts_user_email_ci_unique",
                violation_error_message="A person with this email already exists (emails are compared ignoring case).",
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        # Every way to create or edit a person (registration, the Django admin's forms) stores the address lowercased.
        super().clean()
        self.email = type(self).objects.normalize_email(self.email).lower()
