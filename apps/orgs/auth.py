"""Authentication for the API (DRF) and WebSockets: API keys (`Authorization: Bearer hrm_…`) and the session.

Both put an `Access` on `request.auth`. A key acts with its creator's CURRENT role in the key's org, narrowed to
the key's scopes (`Access.allows` checks both), so demoting or removing the creator narrows or stops the key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user, get_user_model, user_logged_out
from django.db import connection
from django.db.models import Q
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.core import context
from apps.core.errors import HermesAPIError
from apps.core.http import client_address, header_text, request_client_address
from apps.core.metrics import API_KEY_AUTH
from apps.core.permissions import Access
from apps.orgs import tokens
from apps.orgs.models import APIKey, APIKeyState, Membership, Organization
from apps.orgs.selectors import session_access

User = get_user_model()
logger = logging.getLogger(__name__)

# last_used_at/ip are for people ("is this key still used?"), not an access log: one write a minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class APIKeyError(HermesAPIError, exceptions.AuthenticationFailed):
    """A 401 that says what is wrong with the key (DRF adds `WWW-Authenticate` for AuthenticationFailed)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status_code=401)
        API_KEY_AUTH.labels(outcome=code).inc()


class Refusal(NamedTuple):
    """Why a credential does not authenticate: the error code (API error, websocket close reason) and a message."""

    code: str
    message: str


KEY_UNKNOWN = Refusal("key_unknown", "Unknown API key: it does not exist (or was mistyped).")


def key_refusal(key: APIKey, now: datetime) -> Refusal | None:
    """Why a key as `_load_key` returns it does not authenticate at `now`, or None when it does. One place for
    requests (`resolve_api_key`) and for streams that re-check the key they were opened with (`StreamCredential`)."""
    state = key.state(now)  # the same state GET /api/v1/keys/{id} and the console show
    if state == APIKeyState.REVOKED:
        return Refusal("key_revoked", f"This API key ({key.display}) was revoked.")
    if state == APIKeyState.EXPIRED:
        hint = (
            f" It was rotated to {key.rotated_to.display} and its grace period is over: use that key."  # type: ignore[union-attr]
            if key.rotated_to_id
            else ""
        )
        return Refusal("key_expired", f"This API key ({key.display}) expired.{hint}")
    if state == APIKeyState.CREATOR_GONE:
        return Refusal(
            "key_creator_gone",
            f"This API key ({key.display}) belonged to a membership that ended (its creator left or was removed, "
            "or their account was deactivated; joining again does not revive it); an admin can rotate it to "
            "re-issue it under their name.",
        )
    return None


def resolve_api_key(token: str, ip: str | None = None) -> tuple[Any, Access]:
    """(creator, Access) for a plaintext key, or APIKeyError. One query (see `_lookup_sql`)."""
    if not tokens.looks_like_api_key(token):
        raise APIKeyError("Malformed API key: expected 'hrm_' followed by 43 characters.", code="key_malformed")
    key = _load_key(tokens.digest(token))
    if key is None:
        raise APIKeyError(KEY_UNKNOWN.message, code=KEY_UNKNOWN.code)
    now = timezone.now()
    refusal = key_refusal(key, now)
    if refusal is not None:
        raise APIKeyError(refusal.message, code=refusal.code)
    # There, active and a member (with a role): key_refusal checked.
    user: Any = key.created_by
    role: Any = key.creator_role
    touch_last_used(key, ip, now)
    API_KEY_AUTH.labels(outcome="ok").inc()
    context.bind(org_id=key.organization_id, user_id=user.pk)
    return user, Access(org=key.organization, role=role, user=user, api_key=key, scopes=frozenset(key.scopes))


@functools.cache
def _lookup_sql() -> str:
    """The authentication query, written once: the key, its org, its creator and the creator's current role
    (a correlated subquery on the membership's unique index; only a membership the key was made in counts, see
    APIKey.state) in one row, found by the digest's unique index.

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
        f"WHERE m.{q('organization_id')} = k.{q('organization_id')} AND m.{q('user_id')} = k.{q('created_by_id')} "
        f"AND m.{q('created_at')} <= k.{q('created_at')}) "
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
        user, access = resolve_api_key(token, request_client_address(request))
        named = header_text(request.headers.get("X-Hermes-Org"))
        if named and named != access.org.slug:
            # A key acts for its own org only; serving that org's data to a script that believes it named another
            # would be a quiet mix-up.
            raise HermesAPIError(
                f"This API key belongs to '{access.org.slug}', but X-Hermes-Org names '{named[:60]}': a key acts "
                "only for its own organization. Drop the header, or use a key of that organization.",
                code="org_mismatch",
                status_code=400,
            )
        return user, access

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


# --- Long-lived streams ----------------------------------------------------------------------------------------
#
# A request is authenticated and then over; a websocket or an SSE response goes on long after the key or session
# it was opened with was checked. Revoking the key, the end of its rotation grace or its expiry, and signing out
# end those streams too. The actions announce it on commit to the channel-layer group of that credential, which
# only sockets opened with it join: nothing is checked per message. Sockets close at a key's known expiry by a
# timer, and every stream re-checks its credential now and then (one shared read per credential per process)
# in case an announcement was lost: Redis down, a socket served by the in-process layer, a socket whose join of
# the group failed. SSE responses do not use the channel layer at all and only re-check.

SIGNED_OUT = Refusal("signed_out", "The session this stream was opened with signed out or expired.")
LEFT_ORG = Refusal("membership_ended", "You are no longer a member of the organization this stream belongs to.")
KEY_EXPIRED = Refusal("key_expired", "The API key this stream was opened with expired.")
# A hung Redis must not hold the request that revoked a key: streams find out by their re-check anyway.
_ANNOUNCE_TIMEOUT = 2.0


def api_key_group(key_id: Any) -> str:
    return f"auth.key.{key_id}"


def session_group(session_key: str) -> str:
    # A digest, not the session key itself: that is a bearer secret, and group names are Redis channel names
    # anyone with access to Redis can list (PUBSUB CHANNELS).
    return f"auth.session.{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"


@dataclass
class StreamCredential:
    """The API key or the session a stream was opened with; `group` is where its end is announced."""

    group: str
    api_key: APIKey | None = None
    session_key: str | None = None
    user_id: Any = None  # who the session signed in
    org_id: Any = None  # the org a session's stream reads: its person must still be a member
    expires_at: datetime | None = None

    @classmethod
    def of(cls, access: Access | None, session_key: str | None) -> StreamCredential | None:
        if access is None:
            return None
        key = access.api_key
        if key is not None:
            return cls(api_key_group(key.pk), api_key=key, expires_at=key.expires_at)
        if session_key and access.user is not None:
            return cls(
                session_group(session_key), session_key=session_key, user_id=access.user.pk, org_id=access.org.pk
            )
        return None

    def expire_by(self, moment: datetime) -> None:
        """A rotation announced a shorter life (its grace period); expiry only ever moves earlier."""
        self.expires_at = moment if self.expires_at is None else min(self.expires_at, moment)

    def seconds_left(self) -> float | None:
        return None if self.expires_at is None else (self.expires_at - timezone.now()).total_seconds()

    def refusal_by_clock(self) -> Refusal | None:
        """The expiry this stream knows of, without a query."""
        return KEY_EXPIRED if self.expires_at is not None and self.expires_at <= timezone.now() else None

    def recheck(self) -> Refusal | None:
        """Whether the credential still authenticates, as a new request would find it (reads the database)."""
        if self.api_key is not None:
            # The authentication query, without the last-used write and the metrics of a request.
            key = _load_key(self.api_key.digest)
            return KEY_UNKNOWN if key is None else key_refusal(key, timezone.now())
        if self.session_key is not None:
            if _session_user_id(self.session_key) != self.user_id:
                return SIGNED_OUT
            # Removed from the org (an API key's stream finds its creator gone through key_refusal instead).
            if (
                self.org_id is not None
                and not Membership.objects.for_org(self.org_id).filter(user_id=self.user_id).exists()
            ):
                return LEFT_ORG
        return None

    @property
    def recheck_key(self) -> tuple[str, Any]:
        """What streams of one process share a re-check by: a session's answer depends on the org too."""
        return (self.group, self.org_id)


def _session_user_id(session_key: str) -> Any:
    """Whom the session signs in now — None once signed out, expired, or invalidated by a password change —
    by the rules a request follows (`django.contrib.auth.get_user`)."""
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(request).pk


def announce_to_streams(group: str, message: dict[str, Any]) -> None:
    """Send `message` to the streams of a credential, from sync code (actions, signal receivers). Never raises."""
    layer = get_channel_layer()
    if layer is None:  # pragma: no cover - CHANNEL_LAYERS is always configured
        return

    async def send() -> None:
        await asyncio.wait_for(layer.group_send(group, message), _ANNOUNCE_TIMEOUT)

    try:
        async_to_sync(send)()
    except Exception as exc:
        logger.warning("%s to %s not announced (%r); streams notice on their re-check", message["type"], group, exc)


def end_streams(group: str, reason: str) -> None:
    """Close the streams of a credential that stopped authenticating; `reason` is the error code (`key_revoked`)."""
    announce_to_streams(group, {"type": "hermes.auth_ended", "reason": reason})


def shorten_streams(group: str, expires_at: datetime) -> None:
    """Tell the streams of a key that it now expires at `expires_at` (a rotation's grace period)."""
    announce_to_streams(group, {"type": "hermes.auth_expires", "expires_at": expires_at.timestamp()})


@receiver(user_logged_out, dispatch_uid="apps.orgs.auth.end_session_streams")
def end_session_streams(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    # Sent before the session is flushed, so its key is still there to name the group.
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        end_streams(session_group(session_key), SIGNED_OUT.code)
