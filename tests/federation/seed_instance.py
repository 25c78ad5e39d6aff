"""Seed one Hermes instance of the two-instance tests: `python -m tests.federation.seed_instance '<json>'`.

{"orgs": ["acme"], "peers": [{"name", "base_url", "local_name", "secret"}], "policies": [{"org", "remote", "effect"}],
 "demo_agents": ["acme"], "api_keys": ["acme"]}

Prints {"api_keys": {org: plaintext}} (an owner's key with every scope) for the test to call the HTTP API.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")


def main(spec: dict) -> None:
    import django

    django.setup()
    from apps.federation import actions
    from apps.federation.signing import decode_secret
    from apps.orgs.models import Organization

    orgs = {
        slug: Organization.objects.get_or_create(slug=slug, defaults={"name": slug.title()})[0]
        for slug in spec.get("orgs", [])
    }
    for peer in spec.get("peers", []):
        created = actions.create_peer(name=peer["name"], base_url=peer["base_url"], local_name=peer["local_name"])
        actions.add_key(created, secret=decode_secret(peer["secret"]))
    from apps.agents.actions import assign_demo_agents
    from apps.core.permissions import Role
    from apps.orgs.models import Membership
    from tests.factories import UserFactory, issue_api_key

    for slug in spec.get("demo_agents", []):
        assign_demo_agents(org=orgs[slug])
    keys = {}
    for slug in spec.get("api_keys", []):
        owner = UserFactory(email=f"owner@{slug}.test")
        Membership.objects.create(organization=orgs[slug], user=owner, role=Role.OWNER)
        keys[slug] = issue_api_key(owner, orgs[slug])[1]
    print(json.dumps({"api_keys": keys}))
    for rule in spec.get("policies", []):
        actions.set_policy(
            org=orgs[rule["org"]], remote=rule["remote"], effect=rule["effect"], local_agent=rule.get("local_agent", "")
        )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
