from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core.permissions import Role
from apps.core.tenancy import OrgOwnedModel
from apps.core.validators import display_name

API_KEY_PREFIX = "hrm_"


class Plan(models.TextChoices):
    FREE = "free", "Free"
    TEAM = "team", "Team"
    ENTERPRISE = "enterprise", "Enterprise"


@dataclass(frozen=True)
class PlanLimits:
    """The quota settings of a plan (docs/quotas.md lists them; 429 bodies quote them)."""

    requests_per_minute: int
    tasks_per_day: int


PLAN_LIMITS: dict[str, PlanLimits] = {
    Plan.FREE: PlanLimits(requests_per_minute=120, tasks_per_day=1_000),
    Plan.TEAM: PlanLimits(requests_per_minute=1_200, tasks_per_day=50_000),
    Plan.ENTERPRISE: PlanLimits(requests_per_minute=12_000, tasks_per_day=1_000_000),
}
# A key's own limit only ever binds below its org's plan limit: anything above the largest plan's is a mistake.
MAX_KEY_REQUESTS_PER_MINUTE = max(limits.requests_per_minute for limits in PLAN_LIMITS.values())


class Organization(models.Model):
    name = models.CharField(max_length=120, validators=[display_name])
    slug = models.SlugField(max_length=60, unique=True)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug

    @property
    def limits(self) -> PlanLimits:
        return PLAN_LIMITS.get(self.plan, PLAN_LIMITS[Plan.FREE])


class RetiredOrgSlug(models.Model):
    """The slug of a deleted organization, never given to another one: other orgs' federation rules and contacts,
    here and on peers, and their federated agents (`echo.acme@paris`) name an org by its slug, and a newcomer
    registering it took over the trust they grant (their allow rules let its messages and tasks in as the deleted
    org's)."""

    slug = models.SlugField(max_length=60, primary_key=True)
    retired_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Membership(OrgOwnedModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            # One membership per user and org; also serves "is this user in this org?" lookups.
            models.UniqueConstraint(fields=["organization", "user"], name="orgs_membership_unique_user"),
        ]

    def __str__(self) -> str:
        # Read by people (the admin's titles, delete confirmations and history), so names, not ids.
        return f"{self.user.email} @ {self.organization.slug} : {self.role}"


class APIKeyState(models.TextChoices):
    """What a key answers when it is used (the API's `state`, the console's badge)."""

    ACTIVE = "active", "active"
    EXPIRED = "expired", "expired"
    REVOKED = "revoked", "revoked"
    # The row is fine, but its creator left the org or was deactivated: the key answers 401 `key_creator_gone`
    # until it is rotated (re-issued under the rotating admin's name) or revoked.
    CREATOR_GONE = "creator_gone", "creator gone"


class APIKey(OrgOwnedModel):
    """An org's API key. The database holds only the SHA-256 digest of the token (`hrm_` + 256 random bits), so a
    dump of this table cannot be replayed; `prefix` and `last_four` let people recognise a key in lists.

    A plain (unpeppered) SHA-256 is enough here because the token is 256 bits of randomness: there is nothing to
    brute-force, and keys survive a SECRET_KEY rotation.
    """

    name = models.CharField(max_length=100, validators=[display_name])
    digest = models.CharField(max_length=64, unique=True)  # unique: the authentication lookup's index
    prefix = models.CharField(max_length=12)
    last_four = models.CharField(max_length=4)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Optional per-key limit, below the org's plan limit."
    )
    rotated_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotated_from"
    )
    # The key this one was created with (null: created with a session). Revoking a key revokes the keys made with
    # it, and theirs: a leaked key's children are as suspect as it is. A rotation's successor takes its
    # predecessor's place, children included.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    # Not a column: the creator's current role in the key's org (None: no longer a member), loaded with the key by
    # the authentication query and by `selectors.api_keys`.
    creator_role: str | None

    class Meta:
        indexes = [
            # The key list of an org, newest first (cursor pagination on created_at).
            models.Index(fields=["organization", "-created_at"], name="orgs_apikey_org_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.display} ({self.name})"

    @property
    def display(self) -> str:
        return f"{self.prefix}…{self.last_four}"

    def lapsed(self, now: datetime | None = None) -> APIKeyState | None:
        """`revoked` or `expired` when the key's own row ends it (nothing brings it back), else None."""
        now = now or timezone.now()
        if self.revoked_at is not None and self.revoked_at <= now:
            return APIKeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return APIKeyState.EXPIRED
        return None

    def state(self, now: datetime | None = None) -> APIKeyState:
        """What the key answers now. Whether its creator is still an active member is not on this row: it is read
        from `creator_role` (the creator's role in the key's org, None when they are not a member), which the
        authentication query and `selectors.api_keys` load with the key; without it, one query looks it up.

        Only the membership the key was made in counts (one that began before the key): a person removed and
        invited back later does not bring back the keys of their earlier membership, which stay `creator_gone`
        until an admin rotates or revokes them."""
        lapsed = self.lapsed(now)
        if lapsed is not None:
            return lapsed
        creator = self.created_by
        if creator is None or not creator.is_active or self._creator_role() is None:
            return APIKeyState.CREATOR_GONE
        return APIKeyState.ACTIVE

    def _creator_role(self) -> str | None:
        if not hasattr(self, "creator_role"):
            role = Membership.objects.for_org(self.organization_id).filter(
                user_id=self.created_by_id, created_at__lte=self.created_at
            )
            self.creator_role = role.values_list("role", flat=True).first()
        return self.creator_role


class Invitation(OrgOwnedModel):
    """An emailed invitation; only the digest of its token is stored, like API keys."""

    email = models.EmailField()
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    digest = models.CharField(max_length=64, unique=True)  # unique: the accept-by-token lookup
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # At most one open invitation per address and org: re-inviting replaces it (actions.invite_member).
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="orgs_invitation_one_open_per_email",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email}→{self.organization_id}:{self.role}"

    def state(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "pending"
