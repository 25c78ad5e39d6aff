from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from apps.agents.actions import assign_demo_agents
from apps.core.management.base import HermesCommand
from apps.federation.actions import set_policy
from apps.federation.models import Effect
from apps.orgs.actions import create_organization
from apps.orgs.models import Organization

DEMO_EMAIL = "demo@hermes.local"
DEMO_PASSWORD = "hermes-demo"  # noqa: S105 - printed by `make run`; dev/demo only
DEMO_ORG = "demo"
# A second org of the same demo user, with its own demo agents, that the demo org may ask for tasks over
# federation on this instance: Federation → Remote tasks → `demo-echo.partner` works on a fresh `make run`.
PARTNER_ORG = "partner"


class Command(HermesCommand):
    help = (
        "Create the demo user, the demo and partner orgs and their demo agents. Safe to re-run: nothing is doubled, "
        "and the demo agents are registered again at the current HERMES_PUBLIC_URL (re-run it with the right one "
        "when they were seeded at another address)."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = users.objects.create_user(DEMO_EMAIL, DEMO_PASSWORD, name="Demo Admin")
        org = Organization.objects.filter(slug=DEMO_ORG).first()
        if org is None:
            # Deleted in the console, its slug is reserved against newcomers; the demo org is this instance's own.
            org = create_organization(user=user, name="Demo Org", slug=DEMO_ORG, reclaim=True)
        # The built-in demo agents, so a fresh `make run` can send a task at once (idempotent as well).
        assign_demo_agents(org=org, by=user)
        partner = Organization.objects.filter(slug=PARTNER_ORG).first()
        if partner is None:
            partner = create_organization(user=user, name="Partner Org", slug=PARTNER_ORG, reclaim=True)
        assign_demo_agents(org=partner, by=user)
        set_policy(org=org, remote=PARTNER_ORG, effect=Effect.ALLOW, reason="demo: ask the partner org's agents")
        set_policy(org=partner, remote=DEMO_ORG, effect=Effect.ALLOW, reason="demo: accept the demo org's requests")
        self.stdout.write(f"demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (org '{DEMO_ORG}')")
        self.stdout.write(
            f"demo agents registered at {settings.HERMES_PUBLIC_URL}/demo-agents/ (HERMES_PUBLIC_URL; tasks reach "
            "them there)"
        )
        self.stdout.write(
            f"federation demo: Federation → Remote tasks → demo-echo.{PARTNER_ORG} (org '{PARTNER_ORG}' runs it)"
        )
