"""Shared tables that every domain app writes through core helpers: the audit log and idempotency records.

Both are keyed by the org's integer id rather than a foreign key: they must outlive the org they describe (the
audit trail of a deleted org is evidence; a replayed POST must not depend on a join), and core imports no domain
app.
"""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class AuditEvent(models.Model):
    """One row per state change, written by the action that made it (see `apps.core.audit.record`)."""

    org_id = models.BigIntegerField(null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    api_key_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=80)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # The console's audit page: an org's newest events first.
            models.Index(fields=["org_id", "-created_at"], name="core_audit_org_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"


class IdempotencyRecord(models.Model):
    """The remembered outcome of a creating POST sent with an `Idempotency-Key` (see apps/core/idempotency.py)."""

    org_id = models.BigIntegerField()
    endpoint = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            # The replay lookup, and the lock that makes two concurrent duplicates create one object.
            models.UniqueConstraint(fields=["org_id", "endpoint", "key"], name="core_idempotency_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.org_id}:{self.endpoint}:{self.key}"
