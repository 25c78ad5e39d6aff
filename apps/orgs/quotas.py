"""Quotas and usage counters, kept in Redis.

- Requests per minute per org (by plan) and optionally per API key: checked for every authenticated API request by
  `OrgQuotaThrottle` (DRF's throttle hook: runs after authentication and permissions, so refused requests never
  count). Fixed one-minute windows: simple, one counter per window; a client may burst up to twice the limit
  across a window boundary, which is acceptable for protecting the service.
- Usage: accepted API calls and tasks per org per UTC day (kept 35 days), shown by `GET /api/v1/usage`.
- Public endpoints: requests per minute per client address (an IPv6 client by its /64), and failed console
  sign-ins per minute per account, from whatever addresses (a browser that signed in to the account before: its
  own budget).
- Tasks per day (by plan): the tasks app calls `reserve_task(org)` before creating a task (check + count in one
  step), or `check_task_quota(org)` / `record_task(org)` separately.

Every check is ONE Redis round trip (a Lua script run with EVALSHA: read the counters, and only when every limit
has room, increment them and the usage counter). When Redis is unreachable the API keeps serving: the check
fails open, logs, and counts `hermes_quota_fail_open_total`; for `FAIL_OPEN_BACKOFF` seconds afterwards we do
not even try, so a dead Redis costs one connection attempt per second, not one per request.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps.core.errors import HermesAPIError
from apps.core.http import request_client_address
from apps.core.metrics import QUOTA_FAIL_OPEN, QUOTA_REJECTIONS
from apps.core.permissions import Access
from apps.orgs.models import PLAN_LIMITS, Plan

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "hermes:quota"
KEY_PREFIX = DEFAULT_KEY_PREFIX  # tests move this to a private namespace per test
WINDOW_SECONDS = 60
USAGE_TTL_SECONDS = 35 * 86400
FAIL_OPEN_BACKOFF = 1.0
REDIS_TIMEOUT = 0.25  # seconds; a slow Redis must cost a request little, then we fail open
clock = time.time  # the quota clock (tests pin it inside one window)

# KEYS: n limited counters, then (optionally) the usage counter. ARGV: n, then (limit, ttl) per counter, then the
# usage counter's ttl. Returns the counters (after incrementing when allowed), 1/0 for allowed, and the usage count.
_CHECK_AND_COUNT = """
local n = tonumber(ARGV[1])
local counts = {}
local allowed = 1
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  counts[i] = current
  if current >= tonumber(ARGV[2 * i]) then allowed = 0 end
end
if allowed == 1 then
  for i = 1, n do
    counts[i] = redis.call('INCR', KEYS[i])
    if counts[i] == 1 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1])) end
  end
end
local used = 0
if allowed == 1 and #KEYS > n then
  used = redis.call('INCR', KEYS[n + 1])
  if used == 1 then redis.call('EXPIRE', KEYS[n + 1], tonumber(ARGV[2 * n + 2])) end
end
counts[n + 1] = allowed
counts[n + 2] = used
return counts
"""


class QuotaExceeded(HermesAPIError):
    def __init__(self, decision: Decision) -> None:
        super().__init__(
            decision.message(),
            code="quota_exceeded",
            status_code=429,
            details=decision.details(),
            headers=decision.headers(),
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit_name: str  # which limit binds: org_requests_per_minute, key_requests_per_minute, tasks_per_day
    limit: int
    used: int
    reset_at: int  # epoch seconds
    now: float
    org: Any = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - self.now))

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def message(self) -> str:
        what = {
            "org_requests_per_minute": f"This organization's limit of {self.limit} API requests per minute",
            "key_requests_per_minute": f"This API key's limit of {self.limit} requests per minute",
            "tasks_per_day": f"This organization's limit of {self.limit} tasks per day (UTC)",
            "address_requests_per_minute": f"The limit of {self.limit} requests per minute from one address",
            "account_sign_in_failures_per_minute": (
                f"This account's limit of {self.limit} failed sign-ins per minute, from whatever address,"
            ),
            "browser_sign_in_failures_per_minute": (
                f"This browser's limit of {self.limit} failed sign-ins per minute to this account"
            ),
        }[self.limit_name]
        return f"{what} is used up; it resets in {self.retry_after} s. {self.how_to_raise()}"

    def how_to_raise(self) -> str:
        if self.limit_name == "address_requests_per_minute":
            return "Wait for the reset; this limit protects the public endpoints and cannot be raised."
        if self.limit_name in SIGN_IN_LIMITS:
            return (
                "Wait for the reset, or reset the password if it is forgotten; this limit protects accounts from "
                "password guessing and cannot be raised."
            )
        if self.limit_name == "key_requests_per_minute":
            return (
                "This is the key's own limit (rate_limit_per_minute), set when it was created: an admin can create "
                "a key with a higher limit or none; the plan's limit applies to every key."
            )
        plan = getattr(self.org, "plan", Plan.FREE)
        better = [p for p in Plan.values if _limit_of(p, self.limit_name) > _limit_of(plan, self.limit_name)]
        if not better:
            return "This is the largest plan; contact support to raise it."
        offers = ", ".join(f"{Plan(p).label}: {_limit_of(p, self.limit_name):,}" for p in better)
        slug = getattr(self.org, "slug", "<org>")
        return (
            f"Upgrade the plan ({Plan(plan).label} now; {offers}): an owner can, in the console's organization "
            f'settings or signed in (not with an API key) with PATCH /api/v1/orgs/{slug} {{"plan": "..."}}.'
        )

    def details(self) -> dict[str, Any]:
        return {
            "limit": self.limit_name,
            "limit_value": self.limit,
            "used": self.used,
            "resets_at": datetime.fromtimestamp(self.reset_at, UTC).isoformat(),
            "retry_after_seconds": self.retry_after,
            "plan": getattr(self.org, "plan", None),
            "how_to_raise": self.how_to_raise(),
        }


def _limit_of(plan: str, limit_name: str) -> int:
    limits = PLAN_LIMITS[plan]
    return limits.tasks_per_day if limit_name == "tasks_per_day" else limits.requests_per_minute


# --- Redis access with fail-open -----------------------------------------------------------------------------


class _RedisGate:
    """One client per REDIS_URL (settings may change in tests), plus the fail-open backoff."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url: str | None = None
        self._client: redis.Redis | None = None
        self._script: Any = None
        self.down_until = 0.0

    def script(self) -> Any:
        url = settings.REDIS_URL
        if self._url != url:
            with self._lock:
                client = redis.Redis.from_url(
                    url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, decode_responses=True
                )
                self._client, self._script, self._url, self.down_until = (
                    client,
                    client.register_script(_CHECK_AND_COUNT),
                    url,
                    0.0,
                )
        return self._script

    def client(self) -> redis.Redis:
        self.script()
        assert self._client is not None
        return self._client

    def run(self, call: Callable[[], Any], what: str) -> Any:
        """`call()` or None when Redis is (recently) unreachable: the caller then fails open."""
        if time.monotonic() < self.down_until:
            QUOTA_FAIL_OPEN.inc()
            return None
        try:
            return call()
        except redis.RedisError as error:
            self.down_until = time.monotonic() + FAIL_OPEN_BACKOFF
            QUOTA_FAIL_OPEN.inc()
            logger.warning(
                "quota %s skipped (fail open): Redis unreachable: %s; not retrying for %.0f s",
                what,
                error,
                FAIL_OPEN_BACKOFF,
            )
            return None


_gate = _RedisGate()


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def _org_key(org_id: int, *parts: object) -> str:
    # {org_id} is a Redis Cluster hash tag: all of an org's counters live in one slot, so one script can touch them.
    return ":".join([KEY_PREFIX, f"{{{org_id}}}", *map(str, parts)])


def _next_midnight(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=1)).timestamp())


# --- Request rate ------------------------------------------------------------------------------------------------


def check_request(access: Access, now: float | None = None) -> Decision | None:
    """Count one API request for `access`'s org (and key); None when Redis is unreachable (fail open)."""
    now = clock() if now is None else now
    org = access.org
    window = int(now // WINDOW_SECONDS)
    reset_at = (window + 1) * WINDOW_SECONDS
    limits = [("org_requests_per_minute", _org_key(org.pk, "rpm", window), org.limits.requests_per_minute)]
    key_limit = getattr(access.api_key, "rate_limit_per_minute", None)
    if key_limit:
        limits.append(("key_requests_per_minute", _org_key(org.pk, "key", access.api_key.pk, "rpm", window), key_limit))
    keys = [redis_key for _, redis_key, _ in limits] + [_org_key(org.pk, "api", _day(now))]
    args: list[Any] = [len(limits)]
    for _, _, limit in limits:
        args += [limit, WINDOW_SECONDS * 2]
    args.append(USAGE_TTL_SECONDS)
    result = _gate.run(lambda: _gate.script()(keys=keys, args=args), "request check")
    if result is None:
        return None
    allowed = bool(result[len(limits)])
    # Report the binding limit: the exhausted one when refused, else the one with the least room left.
    decisions = [
        Decision(allowed, name, limit, int(used), reset_at, now, org)
        for (name, _, limit), used in zip(limits, result[: len(limits)], strict=True)
    ]
    if not allowed:
        decision = next(d for d in decisions if d.used >= d.limit)
        QUOTA_REJECTIONS.labels(limit=decision.limit_name).inc()
        return decision
    return min(decisions, key=lambda d: d.remaining)


class OrgQuotaThrottle(BaseThrottle):
    """DRF throttle: every request that acts for an org (API key or session) counts against its quota.

    It also leaves the decision on the Django request so `RateLimitHeadersMiddleware` can add the X-RateLimit
    headers to the response, whatever the view answers."""

    def allow_request(self, request: Request, view: Any) -> bool:
        access = request.auth
        if not isinstance(access, Access):
            return True
        decision = check_request(access)
        if decision is None:
            return True
        request._request.hermes_quota = decision  # type: ignore[attr-defined]
        if not decision.allowed:
            raise QuotaExceeded(decision)
        return True


ANONYMOUS_REQUESTS_PER_MINUTE = 20


def _minute_key(subject: str, window: int) -> str:
    return ":".join([KEY_PREFIX, subject, str(window)])


def check_per_minute(subject: str, limit: int, limit_name: str, now: float | None = None) -> Decision | None:
    """Count one request of `subject` (not an org: a client address, a federation peer) against `limit` per
    minute; None when Redis is unreachable (fail open)."""
    now = clock() if now is None else now
    window = int(now // WINDOW_SECONDS)
    keys = [_minute_key(subject, window)]
    result = _gate.run(lambda: _gate.script()(keys=keys, args=[1, limit, WINDOW_SECONDS * 2]), limit_name)
    if result is None:
        return None
    decision = Decision(bool(result[1]), limit_name, limit, int(result[0]), (window + 1) * WINDOW_SECONDS, now)
    if not decision.allowed:
        QUOTA_REJECTIONS.labels(limit=limit_name).inc()
    return decision


def address_group(ip: str) -> str:
    """The part of a client address one budget is kept for: an IPv4 address, or an IPv6 address's /64. A single
    IPv6 host is normally given a whole /64 (SLAAC, privacy addresses), so per address it could take a fresh
    budget for every request."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:  # "unknown": no address to group
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is the IPv4 client 192.0.2.1
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def check_anonymous(ip: str, now: float | None = None) -> Decision | None:
    """Per-address limit for the public endpoints (registration, password reset); None when Redis is down."""
    subject = f"anon:{address_group(ip)}"
    return check_per_minute(subject, ANONYMOUS_REQUESTS_PER_MINUTE, "address_requests_per_minute", now)


def count_anonymous(request: HttpRequest) -> None:
    """Count one public-endpoint request of the client's address; QuotaExceeded past the limit (fails open)."""
    decision = check_anonymous(request_client_address(request) or "unknown")
    if decision is None:
        return
    request.hermes_quota = decision  # type: ignore[attr-defined]
    if not decision.allowed:
        raise QuotaExceeded(decision)


# Failed sign-ins of one account (by the address typed, known or not) per minute, from any client addresses: the
# per-address budget alone let three addresses (or one IPv6 network's many) try 60 passwords in under a minute.
# Past it every sign-in to that account is refused until the minute ends; a successful sign-in does not count.
SIGN_IN_FAILURES_PER_MINUTE = 10
SIGN_IN_LIMITS = ("account_sign_in_failures_per_minute", "browser_sign_in_failures_per_minute")

# A browser that signed in to an account keeps a budget of its own for that account (OWASP's "device cookies"):
# whoever fails on purpose to block the account's sign-in then blocks only the browsers that never signed in to
# it, not its owner's. The cookie is signed (SECRET_KEY), names the account by digest and one random nonce; a
# browser keeps one, for the account it signed in to last.
KNOWN_BROWSER_COOKIE = "hermes_known_browser"
KNOWN_BROWSER_MAX_AGE = 90 * 24 * 3600
_KNOWN_BROWSER_SALT = "apps.orgs.quotas.known-browser"


def _sign_in_subject(username: str) -> str:
    # A digest: Redis key names are listed by operators' tools, and the address is personal data.
    return "sign-in-failures:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def known_browser(request: HttpRequest, username: str) -> str | None:
    """The nonce of this browser's known-browser cookie when it was set by a sign-in to `username`, else None (no
    cookie, another account's, expired or forged)."""
    value = request.COOKIES.get(KNOWN_BROWSER_COOKIE)
    if not value:
        return None
    try:
        subject, nonce = signing.loads(value, salt=_KNOWN_BROWSER_SALT, max_age=KNOWN_BROWSER_MAX_AGE)
    except (signing.BadSignature, TypeError, ValueError):
        return None
    return str(nonce) if subject == _sign_in_subject(username) else None


def remember_browser(request: HttpRequest, response: HttpResponseBase, username: str) -> None:
    """Give the browser that just signed in to `username` its known-browser cookie (see known_browser)."""
    value = signing.dumps([_sign_in_subject(username), secrets.token_urlsafe(12)], salt=_KNOWN_BROWSER_SALT)
    response.set_cookie(
        KNOWN_BROWSER_COOKIE,
        value,
        max_age=KNOWN_BROWSER_MAX_AGE,
        httponly=True,
        secure=settings.SESSION_COOKIE_SECURE,
        samesite="Lax",
    )


def _sign_in_budget(username: str, browser: str | None) -> tuple[str, str]:
    """(Redis subject, limit name) of the failed sign-ins a try at `username` from `browser` counts against."""
    if browser is None:
        return _sign_in_subject(username), "account_sign_in_failures_per_minute"
    return f"{_sign_in_subject(username)}:browser:{browser}", "browser_sign_in_failures_per_minute"


def check_sign_in(username: str, now: float | None = None, *, browser: str | None = None) -> None:
    """QuotaExceeded when the account `username` names has used up this minute's failed sign-ins (fails open):
    the account's shared budget, or the known browser's own one (see known_browser)."""
    now = clock() if now is None else now
    window = int(now // WINDOW_SECONDS)
    subject, limit_name = _sign_in_budget(username, browser)
    key = _minute_key(subject, window)
    failures = int(_gate.run(lambda: _gate.client().get(key), "sign-in check") or 0)
    if failures < SIGN_IN_FAILURES_PER_MINUTE:
        return
    QUOTA_REJECTIONS.labels(limit=limit_name).inc()
    reset_at = (window + 1) * WINDOW_SECONDS
    raise QuotaExceeded(Decision(False, limit_name, SIGN_IN_FAILURES_PER_MINUTE, failures, reset_at, now))


def record_sign_in_failure(username: str, now: float | None = None, *, browser: str | None = None) -> None:
    """Count a failed sign-in against the account `username` names (see check_sign_in)."""
    subject, limit_name = _sign_in_budget(username, browser)
    check_per_minute(subject, SIGN_IN_FAILURES_PER_MINUTE, limit_name, now)


class AnonymousRateThrottle(BaseThrottle):
    """For unauthenticated endpoints: a fixed per-client-address limit (they send email and hash passwords)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        count_anonymous(request._request)
        return True


def limit_anonymous_posts(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """For the console's public forms (sign-in, registration, password reset): every POST counts against the same
    per-address budget as the API's public endpoints, so passwords cannot be guessed at full speed through the
    console either. Past it the form is not processed; the page says when to retry."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "POST":
            count_anonymous(request)
        return view(request, *args, **kwargs)

    return wrapped


def limit_sign_ins(
    view: Callable[..., HttpResponseBase],
    refused: Callable[[QuotaExceeded], HttpResponseBase] | None = None,
) -> Callable[..., HttpResponseBase]:
    """`limit_anonymous_posts` plus the account's budget of failed sign-ins (check_sign_in), for the sign-in views:
    the console's (apps.accounts.views.LoginView) and the Django admin's, which guards the staff accounts.
    `refused` answers a sign-in past either budget (the console's form again, with 429); without it the
    QuotaExceeded goes up (a refused post: apps.core.console)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        browser = known_browser(request, username)
        try:
            count_anonymous(request)
            check_sign_in(username, browser=browser)
        except QuotaExceeded as exc:
            if refused is None:
                raise
            return refused(exc)
        before = request.user
        response = view(request, *args, **kwargs)
        # Signed in by this post: django.contrib.auth.login() put the user in request.user. A session opened
        # before (a member who is not staff, posting to the admin's sign-in) is no success of this try.
        if request.user is not before and request.user.is_authenticated:
            remember_browser(request, response, username)
        else:
            record_sign_in_failure(username, browser=browser)
        return response

    return wrapped


class RateLimitHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        decision: Decision | None = getattr(request, "hermes_quota", None)
        if decision is not None:
            for name, value in decision.headers().items():
                response.headers.setdefault(name, value)
        return response


# --- Tasks per day -------------------------------------------------------------------------------------------------


def _tasks_key(org: Any, now: float) -> str:
    return _org_key(org.pk, "tasks", _day(now))


def reserve_task(org: Any, now: float | None = None) -> Decision | None:
    """Check the org's tasks-per-day limit and count one task, atomically. Raises QuotaExceeded when the day's
    tasks are used up; None when Redis is unreachable (fail open). Call it inside the create action, before the
    INSERT; a task that then fails to be created is still counted (the counter is usage, not an invariant)."""
    now = clock() if now is None else now
    limit = org.limits.tasks_per_day
    keys = [_tasks_key(org, now)]
    result = _gate.run(lambda: _gate.script()(keys=keys, args=[1, limit, USAGE_TTL_SECONDS]), "task reservation")
    if result is None:
        return None
    decision = Decision(bool(result[1]), "tasks_per_day", limit, int(result[0]), _next_midnight(now), now, org)
    if not decision.allowed:
        QUOTA_REJECTIONS.labels(limit="tasks_per_day").inc()
        raise QuotaExceeded(decision)
    return decision


def check_task_quota(org: Any, now: float | None = None) -> None:
    """Raise QuotaExceeded if the org cannot create another task today (no counting; fail open)."""
    now = clock() if now is None else now
    used = _gate.run(lambda: _gate.client().get(_tasks_key(org, now)), "task check")
    limit = org.limits.tasks_per_day
    if used is not None and int(used) >= limit:
        QUOTA_REJECTIONS.labels(limit="tasks_per_day").inc()
        raise QuotaExceeded(Decision(False, "tasks_per_day", limit, int(used), _next_midnight(now), now, org))


def record_task(org: Any, now: float | None = None) -> int | None:
    """Count one task for today without checking (e.g. from `transaction.on_commit`); the new count or None."""
    now = clock() if now is None else now
    keys = [_tasks_key(org, now)]
    result = _gate.run(lambda: _gate.script()(keys=keys, args=[0, USAGE_TTL_SECONDS]), "task count")
    return None if result is None else int(result[1])


# --- Usage ------------------------------------------------------------------------------------------------------


def usage(org: Any, days: int = 7, now: float | None = None) -> dict[str, Any]:
    """The org's limits and counters (today first, then earlier days): one MGET."""
    now = clock() if now is None else now
    window = int(now // WINDOW_SECONDS)
    dates = [_day(now - 86400 * offset) for offset in range(days)]
    keys = [_org_key(org.pk, "rpm", window)]
    for date in dates:
        keys += [_org_key(org.pk, "api", date), _org_key(org.pk, "tasks", date)]
    values = _gate.run(lambda: _gate.client().mget(keys), "usage read")
    limits = org.limits
    body: dict[str, Any] = {
        "plan": org.plan,
        "limits": {"requests_per_minute": limits.requests_per_minute, "tasks_per_day": limits.tasks_per_day},
        "available": values is not None,
        "requests_this_minute": None,
        "days": [],
    }
    if values is None:
        return body
    body["requests_this_minute"] = int(values[0] or 0)
    for index, date in enumerate(dates):
        api_calls, tasks = values[1 + 2 * index], values[2 + 2 * index]
        body["days"].append(
            {"date": f"{date[:4]}-{date[4:6]}-{date[6:]}", "api_calls": int(api_calls or 0), "tasks": int(tasks or 0)}
        )
    return body
