"""Policy decisions with a per-process TTL cache.

A decision is asked on every send and every inbound message, so it is cached per (org, local agent, remote
address) for HERMES_FEDERATION_POLICY_CACHE_TTL seconds. A policy change clears the cache of the process that made
it at once; other processes (workers, other web processes) see it within the TTL — the documented bound.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from apps.core.metrics import FEDERATION_POLICY, FEDERATION_POLICY_CACHE
from apps.federation.addresses import Address, pattern_specificity
from apps.federation.models import Effect, Policy

# Agent-specific rules outrank org-wide rules of any remote specificity (agent->agent beats org->org).
_LOCAL_AGENT_BONUS = 10


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


_cache: dict[tuple[int, str, str], tuple[float, Decision]] = {}
_lock = threading.Lock()


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
        score = pattern_specificity(rule.remote, remote)
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
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        FEDERATION_POLICY_CACHE.labels(result="hit").inc()
        decision = hit[1]
    else:
        FEDERATION_POLICY_CACHE.labels(result="miss").inc()
        decision = _evaluate(org_id, local_agent or "", remote)
        with _lock:
            _cache[key] = (now + settings.HERMES_FEDERATION_POLICY_CACHE_TTL, decision)
    FEDERATION_POLICY.labels(decision="allowed" if decision.allowed else "denied").inc()
    return decision
