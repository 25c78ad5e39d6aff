"""`Idempotency-Key` on creating POSTs: a retried request returns the original response and creates nothing.

Usage: put the mixin first on an org-scoped viewset that has `create`::

    class TaskViewSet(IdempotentCreateMixin, mixins.CreateModelMixin, OrgScopedViewSet):
        ...

Semantics (per org and per endpoint path, for `IDEMPOTENCY_TTL`):
- no header: a normal create;
- a new key: the create runs; a 2xx response is remembered (status and body);
- the same key with the same body: the remembered response is replayed with `Idempotent-Replayed: true`;
- the same key with a different body: 409 `idempotency_conflict`;
- an error response (4xx/5xx) is not remembered: fix the request and retry with the same key.

Concurrency: the record is inserted in the same transaction as the create, before it. A concurrent duplicate's
INSERT waits on the unique index until the first transaction ends, then sees the committed record and replays it
(or, if the first failed and rolled back, runs the create itself). So two duplicates never both create.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import Conflict, HermesAPIError
from apps.core.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


def endpoint(request: Request) -> str:
    """The path a key is scoped to. The API routes answer with and without a trailing slash, so a retry of
    `POST /tasks` sent to `/tasks/` is the same request, not a second task."""
    return request.path.rstrip("/") or "/"


def request_fingerprint(request: Request) -> str:
    """A digest of what the client asked for: method, path, query and the parsed body (key order ignored)."""
    body = request.data
    if hasattr(body, "lists"):  # a QueryDict (form/multipart): keep repeated keys
        body = {key: values for key, values in body.lists()}
    canonical = json.dumps(
        [request.method, endpoint(request), sorted(request.query_params.lists()), body],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key_of(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise HermesAPIError(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters (a UUID is a good choice).",
            code="invalid_idempotency_key",
            details={HEADER: ["invalid"]},
        )
    return key


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        raise Conflict(
            f"This {HEADER} was already used with a different request; use a new key for a new request.",
            code="idempotency_conflict",
            details={HEADER: record.key},
        )
    response = Response(record.response_body, status=record.status_code)
    response[REPLAY_HEADER] = "true"
    return response


def purge_expired(now: Any = None) -> int:
    """Drop records older than the TTL (run periodically; also done lazily when an old key is reused)."""
    cutoff = (now or timezone.now()) - IDEMPOTENCY_TTL
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def idempotent(org_id: int, request: Request, create: Callable[[], Response]) -> Response:
    """Run `create()` under the request's `Idempotency-Key` (if any), remembering or replaying its response."""
    key = idempotency_key_of(request)
    if key is None:
        return create()
    fingerprint = request_fingerprint(request)
    scope = {"org_id": org_id, "endpoint": endpoint(request)[:255], "key": key}

    existing = IdempotencyRecord.objects.filter(**scope).first()
    if existing is not None and existing.created_at < timezone.now() - IDEMPOTENCY_TTL:
        existing.delete()
        existing = None
    if existing is not None:
        return _replay(existing, fingerprint)

    with transaction.atomic():
        try:
            # The placeholder row holds the unique-index slot for the duration of the create: a concurrent
            # duplicate blocks here until this transaction commits (then replays) or rolls back (then runs).
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    **scope, request_hash=fingerprint, status_code=0, response_body=None
                )
        except IntegrityError:
            return _replay(IdempotencyRecord.objects.get(**scope), fingerprint)
        response = create()
        if status.is_success(response.status_code):
            record.status_code = response.status_code
            record.response_body = response.data
            record.save(update_fields=["status_code", "response_body"])
        else:
            # Errors are not remembered: the client may fix the request and retry with the same key.
            transaction.set_rollback(True)
        return response


class IdempotentCreateMixin:
    """Wraps the `create` of the classes after it (e.g. `mixins.CreateModelMixin`) in an org-scoped viewset.

    A viewset that writes its own `create` puts it in a class after this one in its bases (apps.tasks.api._SendTask):
    one way to honour the key, which the schema (apps.core.schema) recognises to declare it."""

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        parent = super()
        return idempotent(
            self.org.pk,  # type: ignore[attr-defined]
            request,
            lambda: parent.create(request, *args, **kwargs),  # type: ignore[attr-defined]
        )
