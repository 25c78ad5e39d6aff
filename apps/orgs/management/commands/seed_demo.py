from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.agents.actions import assign_demo_agents
from apps.orgs.actions import create_organization
from apps.orgs.models import Organization

DEMO_EMAIL = "demo@hermes.local"
DEMO_PASSWORD = "hermes-demo"  # noqa: S105 - printed by `make run`; dev/demo only
DEMO_ORG = "demo"


class Command(BaseCommand):
    help = "Create the demo user and org (idempotent: re-running changes nothing)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = users.objects.create_user(DEMO_EMAIL, DEMO_PASSWORD, name="Demo Admin")
        org = Organization.objects.filter(slug=DEMO_ORG).first()
        if org is None:
            org = create_organization(user=user, name="Demo Org", slug=DEMO_ORG)
        # The built-in demo agents, so a fresh `make run` can send a task at once (idempotent as well).
        assign_demo_agents(org=org, by=user)
        self.stdout.write(f"demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (org '{DEMO_ORG}')")
