"""``Job``: Chancy's jobs table as an unmanaged model, for the admin and for queries.

Chancy owns the table (``manage.py chancy migrate`` creates it): Django never creates,
alters or writes it; state changes go through Chancy (retry, cancel), never ``save()``."""

from __future__ import annotations

from django.db import models

from chancy.job import JobState
from chancy.migrations import Names


def jobs_table() -> str:
    from chancy.contrib.django.conf import chancy_settings

    return Names(chancy_settings().prefix).prefix + "jobs"  # validated


class Job(models.Model):
    id = models.UUIDField(primary_key=True)
    queue = models.TextField()
    func = models.TextField("task")
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    priority = models.IntegerField(default=0)
    state = models.TextField(choices=[(state.value, state.value) for state in JobState])
    attempts = models.IntegerField(default=0)
    max_attempts = models.IntegerField(default=1)
    scheduled_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    taken_by = models.TextField("worker", null=True)
    unique_key = models.TextField(null=True)
    limits = models.JSONField(default=list)
    backoff = models.JSONField(null=True)
    meta = models.JSONField(default=dict)
    result = models.JSONField(null=True)
    errors = models.JSONField(default=list)

    class Meta:
        managed = False
        db_table = jobs_table()
        ordering = ["-id"]  # ids are time-ordered: newest first
        permissions = [("retry_job", "Can retry jobs"), ("cancel_job", "Can cancel jobs")]

    def __str__(self) -> str:
        return f"{self.func} [{self.state}] {self.id}"
