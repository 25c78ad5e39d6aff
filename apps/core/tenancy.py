"""The one tenancy mechanism: every org-owned row is read through `Model.objects.for_org(org)`.

A query on an org-owned model that was never scoped refuses to run (UnscopedQueryError) instead of silently
returning every tenant's rows. A queryset counts as scoped when it was
- narrowed with `.for_org(org)`, or filtered on the `organization` field, or
- reached through a related manager of an already-loaded row (`task.events.all()`, prefetches): Django marks
  those with an `instance` hint, and the parent row was itself loaded through a scoped query.
`Model.objects.unscoped(reason)` is the loud escape hatch for sweepers, admin and migrations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from django.db import models

if TYPE_CHECKING:
    from django.db.models import Model


class UnscopedQueryError(RuntimeError):
    pass


class OrgScopedQuerySet(models.QuerySet):
    _org_scoped: bool = False

    def _clone(self) -> Self:
        clone = super()._clone()  # type: ignore[misc]
        clone._org_scoped = self._org_scoped
        return clone

    def _add_hints(self, **hints: Any) -> None:
        super()._add_hints(**hints)  # type: ignore[misc]
        if "instance" in hints:
            self._org_scoped = True

    def _mark(self) -> Self:
        self._org_scoped = True
        return self

    def for_org(self, org: Model | int) -> Self:
        return self.filter(organization=org)._mark()

    def unscoped(self, reason: str) -> Self:
        assert reason, "say why this query may cross tenants"
        return self._clone()._mark()

    def filter(self, *args: Any, **kwargs: Any) -> Self:
        clone = super().filter(*args, **kwargs)
        if any(key == "organization" or key.startswith(("organization_", "organization__")) for key in kwargs):
            clone._org_scoped = True
        return clone

    def _check_scoped(self) -> None:
        if not self._org_scoped:
            raise UnscopedQueryError(
                f"{self.model.__name__} is org-owned: query it through .for_org(org) (or .unscoped(reason))."
            )

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            self._check_scoped()
        super()._fetch_all()

    def count(self) -> int:
        self._check_scoped()
        return super().count()

    def exists(self) -> bool:
        self._check_scoped()
        return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._check_scoped()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._check_scoped()
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._check_scoped()
        return super().delete()

    def iterator(self, chunk_size: int | None = None) -> Any:
        self._check_scoped()
        return super().iterator(chunk_size=chunk_size)


class OrgScopedManager(models.Manager.from_queryset(OrgScopedQuerySet)):  # type: ignore[misc]
    pass


class OrgOwnedModel(models.Model):
    """Abstract base for every row that belongs to an organization."""

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = OrgScopedManager()

    class Meta:
        abstract = True
