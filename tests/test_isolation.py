"""Cross-org isolation, parametrized over the URL configuration: one tenant never sees another's objects.

Every route under /api/v1/ is collected from `get_resolver()`. Each route NAME must appear in `ISOLATION`:

- `Detail(make, lookup)` for routes with an id in the URL (`pk`, `id`, `slug`, ...): `make(org, owner)` creates
  an object of the route's type in ANOTHER org (globex, owned by charlie) and `lookup(obj)` gives the URL kwargs
  (default `{"pk": obj.pk}`). For every HTTP method the route accepts, alice (owner of acme: every permission in
  her own org) asks for that object through her session and through her API key: each answer must be a 404,
  exactly like a missing id, and the object must still exist.
- `Listing(make, column, value)` for list routes: `make` runs for alice's org and for the other org; alice's
  object must appear in her list and the other org's must not (`value(obj)` is compared with `row[column]`).
- `Exempt(reason)` for routes that hold no org-owned data addressed by the caller (health, schema, /me, ...).

A route missing from ISOLATION fails `test_every_api_route_has_isolation_coverage` with its name, so a new
endpoint cannot ship without saying how it stays inside its org. To add yours, append an entry like

    "agent-detail": Detail(lambda org, owner: AgentFactory(organization=org)),
    "agent-list": Listing(lambda org, owner: AgentFactory(organization=org)),
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from apps.core.audit import record
from apps.federation.actions import audit as fed_audit
from apps.federation.actions import create_contact, request_remote_task, send_message, set_policy
from apps.federation.models import InboxEntry, Outbox, OutboxStatus
from apps.orgs.actions import invite_member
from apps.orgs.models import Membership
from tests.factories import access_for, issue_api_key, key_client

Make = Callable[[Any, Any], Any]


def _by_pk(obj: Any) -> dict[str, Any]:
    return {"pk": obj.pk}


def _pk(obj: Any) -> Any:
    return obj.pk


@dataclass(frozen=True)
class Detail:
    make: Make
    lookup: Callable[[Any], dict[str, Any]] = _by_pk


@dataclass(frozen=True)
class Listing:
    make: Make
    column: str = "id"
    value: Callable[[Any], Any] = _pk


@dataclass(frozen=True)
class Exempt:
    reason: str


def _membership(org: Any, owner: Any) -> Any:
    return Membership.objects.for_org(org).get(user=owner)


def _invitation(org: Any, owner: Any) -> Any:
    return invite_member(access=access_for(owner, org), email="target@globex.test").invitation


def _api_key(org: Any, owner: Any) -> Any:
    return issue_api_key(owner, org, scopes=["tasks:read"])[0]


def _audit_event(org: Any, owner: Any) -> Any:
    return record("isolation.probe", org=org, actor=owner, target=org, slug=org.slug)


def _org(org: Any, owner: Any) -> Any:
    return org


def _agent(org: Any, owner: Any) -> Any:
    from apps.agents.actions import register_agent_manually

    return register_agent_manually(org=org, name=f"Agent of {org.slug}", url=f"https://{org.slug}.example.com/a2a")


def _fed_allow_self(org: Any) -> None:
    set_policy(org=org, remote="*", effect="allow")


def _fed_contact(org: Any, owner: Any) -> Any:
    return create_contact(org=org, name="Contact", address=f"someone@peer-of-{org.slug}")


def _fed_policy(org: Any, owner: Any) -> Any:
    return set_policy(org=org, remote=f"*@peer-of-{org.slug}", effect="deny")


def _fed_message(org: Any, owner: Any) -> Any:
    _fed_allow_self(org)
    return send_message(org=org, recipient=org.slug, payload={"hello": org.slug})


def _fed_dead_letter(org: Any, owner: Any) -> Any:
    message = _fed_message(org, owner)
    Outbox.objects.for_org(org).filter(message=message).update(status=OutboxStatus.DEAD)
    return Outbox.objects.for_org(org).get(message=message)


def _fed_inbox_entry(org: Any, owner: Any) -> Any:
    return InboxEntry.objects.create(
        organization=org, message_id=uuid.uuid4(), sender="someone", type="message", payload={}, receipt={}
    )


def _fed_audit_event(org: Any, owner: Any) -> Any:
    return fed_audit("accepted", org=org, reason=f"isolation probe for {org.slug}")


def _fed_remote_task(org: Any, owner: Any) -> Any:
    _fed_allow_self(org)
    return request_remote_task(org=org, agent=f"echo.{org.slug}", message={"role": "user", "parts": [{"text": "x"}]})


def _task(org: Any, owner: Any) -> Any:
    from apps.tasks.actions import create_task

    message = {"role": "user", "parts": [{"kind": "text", "text": f"for {org.slug}"}]}
    return create_task(org=org, agent=_agent(org, owner), message=message, created_by=owner)


_TASK = Detail(_task)

_FED_PEERS = Exempt("peers and link keys are instance-wide (no org owns them); writes need staff")


ISOLATION: dict[str, Detail | Listing | Exempt] = {
    # ops
    "api-fallback": Exempt("hands a trailing-slash path to its endpoint (covered under that name) or answers 404"),
    "health-live": Exempt("liveness probe: no data"),
    "health-ready": Exempt("readiness probe: dependency status, no org data"),
    "health": Exempt("operator health breakdown: infrastructure status, no org data"),
    "ops-ping": Exempt("operator egress diagnostic (metrics token); no org data"),
    "ops-ping-detail": Exempt("operator egress diagnostic result; no org data"),
    # API docs
    "api-schema": Exempt("the OpenAPI document: no data"),
    "api-docs": Exempt("the interactive docs page: no data"),
    # accounts
    "me": Exempt("the caller's own account and memberships"),
    "auth-register": Exempt("public: creates an account, reads nothing"),
    "auth-password-change": Exempt("acts on the caller's own account only"),
    "auth-password-reset": Exempt("public: answers 202 whatever the address"),
    "auth-password-reset-confirm": Exempt("public: the signed token names the account"),
    # orgs
    "org-list": Listing(_org, column="slug", value=lambda org: org.slug),
    "org-detail": Detail(_org, lookup=lambda org: {"slug": org.slug}),
    "member-list": Listing(_membership),
    "member-detail": Detail(_membership),
    "invitation-list": Listing(_invitation),
    "invitation-detail": Detail(_invitation),
    "invitation-revoke": Detail(_invitation),
    "invitation-accept": Exempt("the token itself names the org (apps/orgs/tests/test_api.py covers misuse)"),
    "api-key-list": Listing(_api_key),
    "api-key-detail": Detail(_api_key),
    "api-key-rotate": Detail(_api_key),
    "api-key-revoke": Detail(_api_key),
    "usage": Exempt("reads the caller's current org only; no id in the URL"),
    "audit-event-list": Listing(_audit_event),
    # agents
    "agent-list": Listing(_agent, value=lambda agent: str(agent.pk)),
    "agent-detail": Detail(_agent),
    "agent-refresh": Detail(_agent),
    "agent-assign-demo": Exempt("adds the built-in demo agents to the caller's own org; no id in the URL"),
    "agent-marketplace": Exempt(
        "lists PUBLIC agents of every org by design; private ones never appear (tests/agents/test_api.py)"
    ),
    # tasks
    "task-list": Listing(_task, value=lambda task: str(task.pk)),
    "task-detail": _TASK,
    "task-cancel": _TASK,
    "task-messages": _TASK,
    "task-events": _TASK,
    "task-stream": _TASK,
    # federation
    "federation-inbox": Exempt(
        "peer-facing: authenticated by the link signature; the path names a link, no org object"
    ),
    "federation-peer-list": _FED_PEERS,
    "federation-peer-detail": _FED_PEERS,
    "federation-peer-add-key": _FED_PEERS,
    "federation-peer-promote-key": _FED_PEERS,
    "federation-peer-retire-key": _FED_PEERS,
    "federation-peer-set-status": _FED_PEERS,
    "federation-contact-list": Listing(_fed_contact),
    "federation-contact-detail": Detail(_fed_contact),
    "federation-policy-list": Listing(_fed_policy),
    "federation-policy-detail": Detail(_fed_policy),
    "federation-message-list": Listing(_fed_message, value=lambda m: str(m.pk)),
    "federation-message-detail": Detail(_fed_message),
    "federation-dlq-list": Listing(_fed_dead_letter, column="message_id", value=lambda o: str(o.message_id)),
    "federation-dlq-detail": Detail(_fed_dead_letter, lookup=lambda o: {"message_id": str(o.message_id)}),
    "federation-dlq-requeue": Detail(_fed_dead_letter, lookup=lambda o: {"message_id": str(o.message_id)}),
    "federation-dlq-discard": Detail(_fed_dead_letter, lookup=lambda o: {"message_id": str(o.message_id)}),
    "federation-dlq-requeue-many": Exempt("bulk: ids in the body resolve inside the caller's org (test_api.py)"),
    "federation-dlq-discard-many": Exempt("bulk: ids in the body resolve inside the caller's org (test_api.py)"),
    "federation-inbox-entry-list": Listing(_fed_inbox_entry),
    "federation-inbox-entry-detail": Detail(_fed_inbox_entry),
    "federation-audit-list": Listing(_fed_audit_event),
    "federation-remote-task-list": Listing(_fed_remote_task, value=lambda t: str(t.pk)),
    "federation-remote-task-detail": Detail(_fed_remote_task),
}


@dataclass(frozen=True)
class Route:
    name: str
    route: str
    kwargs: tuple[str, ...]
    methods: tuple[str, ...]


def _methods(pattern: URLPattern) -> tuple[str, ...]:
    callback: Any = pattern.callback
    actions = getattr(callback, "actions", None)
    if actions:  # a DRF viewset route: method -> action
        return tuple(sorted(method.upper() for method in actions))
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return ("GET",)
    handlers = [m for m in view_class.http_method_names if hasattr(view_class, m) and m not in ("options", "head")]
    return tuple(sorted(m.upper() for m in handlers))


def _walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def api_routes() -> list[Route]:
    routes = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if not route.lstrip("^").startswith("api/v1/"):
            continue
        kwargs = tuple(sorted(pattern.pattern.regex.groupindex))
        routes.append(Route(pattern.name or f"<unnamed {route}>", route, kwargs, _methods(pattern)))
    return routes


ROUTES = api_routes()
DETAIL = [r for r in ROUTES if isinstance(ISOLATION.get(r.name), Detail)]
LISTING = [r for r in ROUTES if isinstance(ISOLATION.get(r.name), Listing)]


def test_every_api_route_has_isolation_coverage() -> None:
    missing = [f"{r.name} ({r.route})" for r in ROUTES if r.name not in ISOLATION]
    assert not missing, (
        "These API routes have no cross-org isolation coverage. Add each route name to ISOLATION in "
        f"tests/test_isolation.py (Detail / Listing / Exempt; see the instructions at the top): {missing}"
    )
    misfiled = [r.name for r in ROUTES if r.kwargs and isinstance(ISOLATION.get(r.name), Listing)]
    assert not misfiled, f"routes with an id in the URL need Detail(...), not Listing(...): {misfiled}"
    stale = sorted(set(ISOLATION) - {r.name for r in ROUTES})
    assert not stale, f"ISOLATION names routes that no longer exist: {stale}"


def _missing(value: Any) -> Any:
    """A lookup value of the same shape as `value` that names nothing (routes may only accept, e.g., hex ids)."""
    if isinstance(value, int):
        return 2**31 - 1
    try:
        uuid.UUID(str(value))
    except ValueError:
        return "no-such-object"
    fresh = uuid.uuid4()
    return fresh.hex if len(str(value)) == 32 else str(fresh)


@pytest.fixture
def callers(org: Any, alice: Any) -> dict[str, APIClient]:
    session = APIClient()
    session.force_login(alice)
    _, plaintext = issue_api_key(alice, org)  # every scope an owner's key can carry
    return {"session": session, "key": key_client(plaintext)}


@pytest.mark.django_db
@pytest.mark.parametrize("route", DETAIL, ids=lambda r: r.name)
def test_another_orgs_object_is_a_404(
    route: Route, callers: dict[str, APIClient], other_org: Any, charlie: Any
) -> None:
    case = ISOLATION[route.name]
    assert isinstance(case, Detail)
    target = case.make(other_org, charlie)
    lookup = case.lookup(target)
    url = reverse(route.name, kwargs=lookup)
    missing_url = reverse(route.name, kwargs={k: _missing(v) for k, v in lookup.items()})
    for via, client in callers.items():
        for method in route.methods:
            response = client.generic(method, url, "{}", content_type="application/json")
            seen = (via, method, url, response.status_code, response.content[:300])
            # Exactly like an id that does not exist: a 404, or the same refusal a missing id gets when the
            # caller may not use this method at all (e.g. a key on a session-only action).
            missing = client.generic(method, missing_url, "{}", content_type="application/json")
            assert (response.status_code, response.json()) == (missing.status_code, missing.json()), seen
            assert response.status_code in (403, 404), seen
            if response.status_code == 403:
                assert response.json()["error"]["code"] in ("missing_scope", "role_forbidden", "session_required"), seen
    type(target)._base_manager.get(pk=target.pk)  # still there: nothing was deleted


@pytest.mark.django_db
@pytest.mark.parametrize("route", LISTING, ids=lambda r: r.name)
def test_another_orgs_objects_are_not_listed(
    route: Route, callers: dict[str, APIClient], org: Any, alice: Any, other_org: Any, charlie: Any
) -> None:
    case = ISOLATION[route.name]
    assert isinstance(case, Listing)
    mine = case.make(org, alice)
    target = case.make(other_org, charlie)
    url = reverse(route.name)
    for via, client in callers.items():
        response = client.get(url)
        assert response.status_code == 200, (via, url, response.status_code, response.content[:300])
        body = response.json()
        rows = body["results"] if isinstance(body, dict) and "results" in body else body
        values = {row.get(case.column) for row in rows}
        # Our own object is listed (so an empty list cannot pass for isolation); theirs is not.
        assert case.value(mine) in values, (via, url, values)
        assert case.value(target) not in values, (via, url)
