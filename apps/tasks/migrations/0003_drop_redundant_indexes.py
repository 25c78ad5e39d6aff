"""Drop four single-column indexes every submit wrote and nothing read (apps/tasks/models.py says which index
covers each one).

The database side only drops the indexes: letting AlterField do it would also drop and re-add both foreign keys,
and re-adding one validates every row of the table under a lock."""

import django.db.models.deletion
from django.db import migrations, models

# (table, index Django created for the column, column)
INDEXES = [
    ("tasks_task", "tasks_task_created_at_0fbeae19", "created_at"),
    ("tasks_task", "tasks_task_organization_id_50c2ed4a", "organization_id"),
    ("tasks_taskevent", "tasks_taskevent_created_at_76738fc1", "created_at"),
    ("tasks_taskevent", "tasks_taskevent_task_id_bfe419b4", "task_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0002_apikey_invitation"),
        ("tasks", "0002_task_agent_restrict"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}")',
                )
                for table, index, column in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="created_at",
                    field=models.DateTimeField(auto_now_add=True),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="orgs.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskevent",
                    name="created_at",
                    field=models.DateTimeField(auto_now_add=True),
                ),
                migrations.AlterField(
                    model_name="taskevent",
                    name="task",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="tasks.task",
                    ),
                ),
            ],
        )
    ]
