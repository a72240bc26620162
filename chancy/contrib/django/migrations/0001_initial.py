"""The unmanaged ``Job`` model (no table is created: Chancy's migrations own it), so
that Django creates its permissions and ``makemigrations`` finds nothing to write here."""

from django.db import migrations, models

from chancy.contrib.django.models import jobs_table
from chancy.job import JobState


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.UUIDField(primary_key=True, serialize=False)),
                ("queue", models.TextField()),
                ("func", models.TextField(verbose_name="task")),
                ("args", models.JSONField(default=list)),
                ("kwargs", models.JSONField(default=dict)),
                ("priority", models.IntegerField(default=0)),
                ("state", models.TextField(choices=[(state.value, state.value) for state in JobState])),
                ("attempts", models.IntegerField(default=0)),
                ("max_attempts", models.IntegerField(default=1)),
                ("scheduled_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField(null=True)),
                ("created_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(null=True)),
                ("completed_at", models.DateTimeField(null=True)),
                ("taken_by", models.TextField(null=True, verbose_name="worker")),
                ("unique_key", models.TextField(null=True)),
                ("limits", models.JSONField(default=list)),
                ("backoff", models.JSONField(null=True)),
                ("meta", models.JSONField(default=dict)),
                ("result", models.JSONField(null=True)),
                ("errors", models.JSONField(default=list)),
            ],
            options={
                "managed": False,
                "db_table": jobs_table(),
                "ordering": ["-id"],
                "permissions": [("retry_job", "Can retry jobs"), ("cancel_job", "Can cancel jobs")],
            },
        ),
    ]
