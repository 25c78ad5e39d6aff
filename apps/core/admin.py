"""Admin base for org-owned models: staff see every tenant, so the queryset is explicitly unscoped."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest


class OrgOwnedAdmin(admin.ModelAdmin):
    list_select_related = ("organization",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.model.objects.unscoped("staff admin sees every org")
