"""Policy decisions with a per-process cache that every process invalidates at once.

A decision is asked on every send and every inbound message, so it is cached per (org, local agent, remote
address) for HERMES_FEDERATION_POLICY_CACHE_TTL seconds. A policy change bumps the org's *generation*, a counter
in Redis, and a cached decision is used only while its generation is current: every process (workers deliver
local messages too) sees the change on its next decision, for one Redis GET. Before, other processes kept a
stale decision for up to the TTL, so an operator who fixed a policy and requeued the dead letter at once got it
dead-lettered again. Without Redis the TTL is the bound again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

from apps.core.metrics import FEDERATION_POLICY, FEDERATION_POLICY_CACHE
from apps.federation.addresses import Address, InvalidAddress, pattern_specificity
from apps.federation.models import Effect, Policy

# Agent-specific rules outrank org-wide rules of any remote specificity (agent->agent beats org->org).
_LOCAL_AGENT_BONUS = 10


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


logger = logging.getLogger(__name__)
_cache: dict[tuple[int, str, str], tuple[float, int | None, Decision]] = {}
_lock = threading.Lock()
_GENERATION_KEY = "federation:policy-generation:{}"
_REDIS_BACKOFF_S = 1.0  # after a failed read, do not ask Redis again for this long (a dead Redis costs little)
_redis_down_until = 0.0


def _generation(org_id: int) -> int | None:
    """The org's policy generation, or None when Redis cannot be read (decisions then live out their TTL)."""
    global _redis_down_until
    if time.monotonic() < _redis_down_until:
        return None
    try:
        return int(caches["default"].get(_GENERATION_KEY.format(org_id)) or 0)
    except Exception as exc:
        _redis_down_until = time.monotonic() + _REDIS_BACKOFF_S
        logger.warning("policy generation unreadable (%s): cached decisions live out their TTL", exc)
        return None


def bump_generation(org_id: int) -> None:
    """Tell every process that the org's policies changed (called once the change is committed)."""
    key = _GENERATION_KEY.format(org_id)
    try:
        cache = caches["default"]
        if not cache.add(key, 1, timeout=None):
            cache.incr(key)
    except Exception as exc:
        logger.warning("policy generation of org %s not bumped (%s): other processes see the change within "
                       "HERMES_FEDERATION_POLICY_CACHE_TTL", org_id, exc)  # fmt: skip


def clear_cache(org_id: int | None = None) -> None:
    with _lock:
        if org_id is None:
            _cache.clear()
        else:
            for key in [k for k in _cache if k[0] == org_id]:
                del _cache[key]


def _evaluate(org_id: int, local_agent: str, remote: Address) -> Decision:
    best: tuple[int, bool, Policy] | None = None
    rules = Policy.objects.for_org(org_id).filter(local_agent__in=["", local_agent] if local_agent else [""])
    for rule in rules:
        try:
            score = pattern_specificity(rule.remote, remote)
        except InvalidAddress as exc:
            # A pattern saved before the admin validated it (every entry refuses one now): it can match nothing,
            # and raising here made every send and every inbound message of the org fail, whatever its rules said.
            logger.warning("federation policy %s of org %s ignored: %s", rule.pk, org_id, exc)
            continue
        if score is None:
            continue
        score += _LOCAL_AGENT_BONUS if rule.local_agent else 0
        deny = rule.effect == Effect.DENY
        # Higher score wins; on a tie deny wins.
        if best is None or (score, deny) > (best[0], best[1]):
            best = (score, deny, rule)
    if best is None:
        default = settings.HERMES_FEDERATION_DEFAULT_POLICY
        return Decision(default == Effect.ALLOW, f"no rule matches {remote}: instance default is {default}")
    rule = best[2]
    text = f"rule '{rule}'" + (f": {rule.reason}" if rule.reason else "")
    return Decision(rule.effect == Effect.ALLOW, text)


def decide(org_id: int, local_agent: str, remote: Address) -> Decision:
    key = (org_id, local_agent or "", str(remote))
    now = time.monotonic()
    # Read before evaluating: a change committed meanwhile bumps past it, so that decision is not reused.
    generation = _generation(org_id)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now and (generation is None or hit[1] == generation):
        FEDERATION_POLICY_CACHE.labels(result="hit").inc()
        decision = hit[2]
    else:
        FEDERATION_POLICY_CACHE.labels(result="miss").inc()
        decision = _evaluate(org_id, local_agent or "", remote)
        with _lock:
            _cache[key] = (now + settings.HERMES_FEDERATION_POLICY_CACHE_TTL, generation, decision)
    FEDERATION_POLICY.labels(decision="allowed" if decision.allowed else "denied").inc()
    return decision
