"""`insert_together(*rows)`: new rows of several models written by one SQL statement.

Each statement Django sends is a round trip to Postgres, and on a busy server its cost is mostly the CPU both ends
spend on it, not the wait. A task's creation writes the task, its first events and its audit row: as `save()`,
`bulk_create()` and `objects.create()` inside `transaction.atomic()` that was five statements plus BEGIN and
COMMIT. As one `WITH … INSERT` it is one, and because a single statement is atomic on its own it needs no
transaction around it (on Postgres; elsewhere the INSERTs run one by one in a transaction). The SQL of each INSERT
is still the ORM's own (`InsertQuery`), so the rows get their defaults, `auto_now` values and JSON encoding exactly
as `save()` would give them.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model
from django.db.models.sql import InsertQuery


def insert_together(*objs: Model, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT `objs` (new instances of any models) in one statement; all of them are written or none.

    Like `bulk_create`: no `save()` override runs and no pre/post_save signal is sent, and a database-generated
    primary key (an AutoField) is not read back. Foreign keys between the rows are fine: Django declares them
    DEFERRABLE INITIALLY DEFERRED, so they are checked when the statement's transaction commits.
    """
    groups: dict[type[Model], list[Model]] = {}
    for obj in objs:
        if obj._meta.parents:
            raise ValueError(f"insert_together: {type(obj).__name__} uses multi-table inheritance")
        obj._prepare_related_fields_for_save(operation_name="insert_together")  # type: ignore[attr-defined]
        groups.setdefault(type(obj), []).append(obj)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for model, rows in groups.items():
        opts = model._meta
        generated_pk = opts.auto_field is not None and any(row.pk is None for row in rows)
        if generated_pk and any(row.pk is not None for row in rows):
            raise ValueError(f"insert_together: mixed given and generated primary keys for {model.__name__}")
        fields = [f for f in opts.concrete_fields if not f.generated and not (generated_pk and f is opts.auto_field)]
        query = InsertQuery(model)
        query.insert_values(fields, rows)
        ((text, values),) = query.get_compiler(using=using).as_sql()
        statements.append((text, tuple(values)))
    if not statements:
        return
    connection = connections[using]
    if connection.vendor != "postgresql":
        # SQLite (`make run`'s embedded default) has no INSERT inside WITH: the same rows, one statement each, in
        # one transaction.
        with transaction.atomic(using=using), connection.cursor() as cursor:
            for text, values in statements:
                cursor.execute(text, values)
    else:
        *leading, (last_sql, last_params) = statements
        ctes = ", ".join(f"insert_{index} AS ({text})" for index, (text, _) in enumerate(leading))
        sql = f"WITH {ctes} {last_sql}" if leading else last_sql
        params = tuple(p for _, values in leading for p in values) + last_params
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using
