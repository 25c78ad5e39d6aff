"""Authentication for the API (DRF) and WebSockets: API keys (`Authorization: Bearer hrm_…`) and the session.

Both put an `Access` on `request.auth`. A key acts with its creator's CURRENT role in the key's org, narrowed to
the key's scopes (`Access.allows` checks both), so demoting or removing the creator narrows or stops the key.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.core import context
from apps.core.errors import HermesAPIError
from apps.core.http import client_address, request_client_address
from apps.core.metrics import API_KEY_AUTH
from apps.core.permissions import Access
from apps.orgs import tokens
from apps.orgs.models import APIKey, Membership, Organization
from apps.orgs.selectors import session_access

User = get_user_model()

# last_used_at/ip are for people ("is this key still used?"), not an access log: one write a minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class APIKeyError(HermesAPIError, exceptions.AuthenticationFailed):
    """A 401 that says what is wrong with the key (DRF adds `WWW-Authenticate` for AuthenticationFailed)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status_code=401)
        API_KEY_AUTH.labels(outcome=code).inc()


def resolve_api_key(token: str, ip: str | None = None) -> tuple[Any, Access]:
    """(creator, Access) for a plaintext key, or APIKeyError. One query (see `_lookup_sql`)."""
    if not tokens.looks_like_api_key(token):
        raise APIKeyError("Malformed API key: expected 'hrm_' followed by 43 characters.", code="key_malformed")
    key = _load_key(tokens.digest(token))
    if key is None:
        raise APIKeyError("Unknown API key: it does not exist (or was mistyped).", code="key_unknown")
    now = timezone.now()
    state = key.state(now)
    if state == "revoked":
        raise APIKeyError(f"This API key ({key.display}) was revoked.", code="key_revoked")
    if state == "expired":
        hint = " It was rotated and its grace period is over: use its successor." if key.rotated_to_id else ""
        raise APIKeyError(f"This API key ({key.display}) expired.{hint}", code="key_expired")
    user = key.created_by
    role = key.creator_role  # type: ignore[attr-defined]
    if user is None or not user.is_active or role is None:
        raise APIKeyError(
            f"This API key ({key.display}) was created by someone who is no longer an active member; "
            "an admin can rotate it to re-issue it under their name.",
            code="key_creator_gone",
        )
    touch_last_used(key, ip, now)
    API_KEY_AUTH.labels(outcome="ok").inc()
    context.bind(org_id=key.organization_id, user_id=user.pk)
    return user, Access(org=key.organization, role=role, user=user, api_key=key, scopes=frozenset(key.scopes))


@functools.cache
def _lookup_sql() -> str:
    """The authentication query, written once: the key, its org, its creator and the creator's current role
    (a correlated subquery on the membership's unique index) in one row, found by the digest's unique index.

    Hand-written rather than built by the ORM on every request: compiling the equivalent queryset costs more
    than running it, and this query is on the path of every API request (bench/auth.py measures it)."""
    q = connection.ops.quote_name

    def columns(alias: str, model: Any) -> list[str]:
        return [f"{alias}.{q(f.column)}" for f in model._meta.concrete_fields]

    select = [*columns("k", APIKey), *columns("o", Organization), *columns("u", User)]
    # Only model metadata (table and column names, quoted) goes into the text; the digest is a parameter.
    return (
        f"SELECT {', '.join(select)}, "  # noqa: S608
        f"(SELECT m.{q('role')} FROM {q(Membership._meta.db_table)} m "
        f"WHERE m.{q('organization_id')} = k.{q('organization_id')} AND m.{q('user_id')} = k.{q('created_by_id')}) "
        f"FROM {q(APIKey._meta.db_table)} k "
        f"INNER JOIN {q(Organization._meta.db_table)} o ON o.{q('id')} = k.{q('organization_id')} "
        f"LEFT OUTER JOIN {q(User._meta.db_table)} u ON u.{q('id')} = k.{q('created_by_id')} "
        f"WHERE k.{q('digest')} = %s"
    )


@functools.cache
def _loaders(model: Any) -> tuple[list[str], list[tuple[int, list[Any], Any]]]:
    """Per model: the attnames, and the converters of the fields that have any — the backend's first (SQLite
    hands back naive datetimes and text decimals), then the field's own (e.g. JSONField), as the ORM applies them."""
    fields = model._meta.concrete_fields
    converters = [
        (i, connection.ops.get_db_converters(f.cached_col) + f.get_db_converters(connection), f.cached_col)
        for i, f in enumerate(fields)
    ]
    return [f.attname for f in fields], [c for c in converters if c[1]]


def _instance(model: Any, values: Sequence[Any]) -> Any:
    attnames, converters = _loaders(model)
    row = list(values)
    for index, functions, expression in converters:
        for convert in functions:
            row[index] = convert(row[index], expression, connection)
    return model.from_db(connection.alias, attnames, row)


def _load_key(digest: str) -> APIKey | None:
    # Looking the digest up through an index is not a timing oracle: an attacker controls the token, not its hash.
    with connection.cursor() as cursor:
        cursor.execute(_lookup_sql(), [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    n_key, n_org = len(APIKey._meta.concrete_fields), len(Organization._meta.concrete_fields)
    key = _instance(APIKey, row[:n_key])
    key.organization = _instance(Organization, row[n_key : n_key + n_org])
    user_values = row[n_key + n_org : -1]
    key.created_by = _instance(User, user_values) if user_values[0] is not None else None
    key.creator_role = row[-1]
    return key


def touch_last_used(key: APIKey, ip: str | None, now: Any) -> None:
    """At most one UPDATE per key per minute: skipped when the loaded row is recent, and conditional in SQL so
    concurrent requests that all saw a stale value still write once."""
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    cutoff = now - LAST_USED_RESOLUTION
    APIKey.objects.for_org(key.organization_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff), pk=key.pk
    ).update(last_used_at=now, last_used_ip=ip)
    key.last_used_at, key.last_used_ip = now, ip


class APIKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer hrm_…`. Other Bearer tokens are left to later authentication classes."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise APIKeyError("Malformed Authorization header: use 'Bearer hrm_…'.", code="key_malformed")
        token = parts[1].decode("latin1")
        if not token.startswith("hrm_"):
            return None
        return resolve_api_key(token, request_client_address(request))

    def authenticate_header(self, request: Request) -> str:
        # Makes unauthenticated API requests a 401 (with this challenge) rather than a 403.
        return 'Bearer realm="hermes"'


class SessionOrgAuthentication(SessionAuthentication):
    """The console's session, acting for the person's current org (Access on request.auth)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        access = session_access(request._request, user)
        context.bind(user_id=user.pk, org_id=access.org.pk if access else None)
        return user, access


def client_ip_from_scope(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    forwarded = next((v.decode("latin1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"), None)
    return client_address(str(client[0]), forwarded) if client else None
