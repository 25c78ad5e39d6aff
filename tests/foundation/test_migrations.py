from __future__ import annotations

import io

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from apps.core.tenancy import OrgOwnedModel


def _schema() -> dict[str, list[tuple[str, str]]]:
    with connection.cursor() as cursor:
        tables = sorted(connection.introspection.table_names(cursor))
        return {
            table: sorted(
                (col.name, col.type_code.__str__())
                for col in connection.introspection.get_table_description(cursor, table)
            )
            for table in tables
        }


@pytest.mark.django_db
def test_no_model_changes_without_migration() -> None:
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_every_app_migrates_to_zero_and_back() -> None:
    before = _schema()
    local_apps = [c.label for c in apps.get_app_configs() if c.name.startswith("apps.") and c.models_module]
    for label in reversed(local_apps):
        call_command("migrate", label, "zero", verbosity=0)
    remaining = set(connection.introspection.table_names())
    assert not any(t.split("_")[0] in local_apps for t in remaining), remaining
    call_command("migrate", verbosity=0)
    assert _schema() == before


def test_every_org_owned_model_has_the_scoped_manager() -> None:
    for model in apps.get_models():
        if issubclass(model, OrgOwnedModel):
            assert hasattr(model.objects, "for_org"), model
