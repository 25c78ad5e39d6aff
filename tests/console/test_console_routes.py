"""Every console route, collected from the URL configuration: anonymous visitors are sent to sign in, and every
route that names an object answers charlie (owner of another org) with a 404 for acme's object — exactly like a
missing id. A new console route that is not listed in ROUTES fails `test_every_console_route_is_classified`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from apps.agents import actions as agent_actions
from apps.federation import actions as federation_actions
from apps.federation.models import Effect, Outbox
from apps.orgs import actions as org_actions
from apps.orgs.models import Membership
from tests.factories import access_for, issue_api_key

pytestmark = pytest.mark.django_db

CONSOLE_NAMESPACES = ("accounts", "orgs", "agents", "tasks", "federation")

Make = Callable[[Any, Any, Any], dict[str, Any]]  # (acme, alice, mia) -> URL kwargs naming one of acme's objects


def _membership(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    return {"membership_id": Membership.objects.for_org(org).get(user=mia).pk}


def _invitation(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    issued = org_actions.invite_member(access=access_for(alice, org), email="new@acme.test")
    return {"invitation_id": issued.invitation.pk}


def _key(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    return {"key_id": issue_api_key(alice, org, scopes=["agents:read"])[0].pk}


def _agent(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    agent = agent_actions.register_agent_manually(org=org, name="Private", url="https://agent.example.com/rpc")
    return {"agent_id": str(agent.pk)}


def _task(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    from apps.tasks import actions as task_actions  # the tasks app lands separately

    agent = agent_actions.register_agent_manually(org=org, name="Runner", url="https://agent.example.com/rpc")
    task = task_actions.create_task(
        org=org, agent=agent, message={"role": "user", "parts": [{"kind": "text", "text": "x"}]}
    )
    return {"task_id": str(task.pk)}


def _policy(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    return {"policy_id": federation_actions.set_policy(org=org, remote="*", effect=Effect.ALLOW).pk}


def _contact(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    return {"contact_id": federation_actions.create_contact(org=org, name="Globex", address="globex").pk}


def _recipient_org() -> None:
    from apps.orgs.models import Organization

    Organization.objects.get_or_create(slug="nobody", defaults={"name": "Nobody"})  # sends to it are accepted


def _message(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    _recipient_org()
    federation_actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    message = federation_actions.send_message(org=org, recipient="nobody", payload={})
    assert Outbox.objects.for_org(org).filter(message=message).exists()
    return {"message_id": str(message.pk)}


def _remote_task(org: Any, alice: Any, mia: Any) -> dict[str, Any]:
    _recipient_org()
    federation_actions.set_policy(org=org, remote="*", effect=Effect.ALLOW)
    remote = federation_actions.request_remote_task(org=org, agent="echo.nobody", message={"parts": [{"text": "x"}]})
    return {"remote_id": str(remote.pk)}


# route name -> Make (names an acme object: charlie must get 404), or a string saying why charlie's 404 does not
# apply (public page, the caller's own org, or instance-wide data).
ROUTES: dict[str, Make | str] = {
    "accounts:register": "public",
    "accounts:login": "public",
    "accounts:logout": "public",
    "accounts:password_change": "the signed-in person's own account",
    "accounts:password_reset": "public",
    "accounts:password_reset_done": "public",
    "accounts:password_reset_confirm": "public: the emailed token is the credential",
    "accounts:password_reset_complete": "public",
    "orgs:invitation-accept": "public: the emailed token is the credential (unknown token: 404)",
    "orgs:dashboard": "own org",
    "orgs:create": "creates a new org",
    "orgs:switch": "own memberships only (tested in test_foundation)",
    "orgs:settings": "own org",
    "orgs:delete": "own org",
    "orgs:members": "own org",
    "orgs:member-role": _membership,
    "orgs:member-remove": _membership,
    "orgs:invite": "own org",
    "orgs:invitation-revoke": _invitation,
    "orgs:usage": "own org",
    "orgs:keys": "own org",
    "orgs:key-rotate": _key,
    "orgs:key-revoke": _key,
    "orgs:audit": "own org (rows come from apps.core.audit.events_for_org; tests/console/test_audit_page.py)",
    "agents:list": "own org",
    "agents:register": "own org",
    "agents:preview": "reads a URL, stores nothing",
    "agents:register-manual": "creates in the caller's own org",
    "agents:assign-demo": "own org",
    "agents:detail": _agent,
    "agents:refresh": _agent,
    "agents:visibility": _agent,
    "agents:delete": _agent,
    "agents:marketplace": "public agents of every org, by design",
    "tasks:list": "own org",
    "tasks:create": "own org",
    "tasks:detail": _task,
    "tasks:cancel": _task,
    "tasks:reply": _task,
    "federation:peers": "instance-wide (peers are shared; changes need staff)",
    "federation:peer-create": "instance-wide (staff)",
    "federation:peer-key": "instance-wide (staff)",
    "federation:peer-status": "instance-wide (staff)",
    "federation:contacts": "own org",
    "federation:contact-delete": _contact,
    "federation:policies": "own org",
    "federation:policy-delete": _policy,
    "federation:outbox": "own org",
    "federation:message": _message,
    "federation:inbox": "own org",
    "federation:dlq": "own org",
    "federation:dlq-apply": "ids are checked against the org's DLQ (tested in test_federation_pages)",
    "federation:audit": "own org",
    "federation:remote-tasks": "own org",
    "federation:remote-task": _remote_task,
}


def _console_routes() -> Iterator[tuple[str, URLPattern]]:
    def walk(patterns: list[Any], namespace: str | None) -> Iterator[tuple[str, URLPattern]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, entry.namespace or namespace)
            elif isinstance(entry, URLPattern) and namespace in CONSOLE_NAMESPACES and entry.name:
                yield f"{namespace}:{entry.name}", entry

    yield from walk(get_resolver().url_patterns, None)


ALL = dict(_console_routes())


def test_every_console_route_is_classified() -> None:
    missing = sorted(set(ALL) - set(ROUTES))
    assert not missing, f"Console routes without an isolation entry in {__name__}.ROUTES: {missing}"


def _dummy_kwargs(pattern: URLPattern) -> dict[str, Any]:
    values = {"int": 1, "str": "x", "slug": "x", "uuid": "00000000-0000-0000-0000-000000000000", "path": "x"}
    converters = pattern.pattern.converters  # type: ignore[attr-defined]
    return {
        name: values.get(type(conv).__name__.replace("Converter", "").lower(), "x") for name, conv in converters.items()
    }


@pytest.mark.parametrize(
    "name", sorted(n for n, how in ROUTES.items() if n in ALL and not str(how).startswith("public"))
)
def test_anonymous_visitors_are_sent_to_sign_in(client: Client, name: str) -> None:
    url = reverse(name, kwargs=_dummy_kwargs(ALL[name]))
    for method in (client.get, client.post):
        response = method(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), (name, method)


@pytest.mark.parametrize("name", sorted(n for n, how in ROUTES.items() if n in ALL and callable(how)))
def test_charlie_gets_404_for_acme_objects(
    client: Client, name: str, org: Any, alice: Any, mia: Any, charlie: Any, settings: Any
) -> None:
    make = ROUTES[name]
    assert callable(make)
    kwargs = make(org, alice, mia)
    client.force_login(charlie)
    url = reverse(name, kwargs=kwargs)
    page = client.get(url)
    # A form-only address opened as a page leads to the page above it, found from the address alone (nothing
    # about acme's object is looked up), which is then a 404 for charlie or his own list.
    assert page.status_code == 404 or (page.status_code == 302 and url.startswith(page["Location"])), name
    if page.status_code == 302:
        assert client.get(page["Location"], follow=True).status_code in {200, 404}, name
    assert (
        client.post(url, {"role": "owner", "visibility": "public", "text": "x", "grace_hours": "0"}).status_code == 404
    )
