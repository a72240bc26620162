"""``ChancyBackend``: Django's task framework on Chancy's queues.

    TASKS = {"default": {"BACKEND": "chancy.contrib.django.backend.ChancyBackend",
                         "QUEUES": ["default", "emails"]}}

``enqueue()`` pushes one job through the project's app (see
:func:`~chancy.contrib.django.app.default_app`), inside ``transaction.atomic()`` on
``CHANCY['DATABASE']`` in that transaction; ``get_result()`` reads the job row back as a
``TaskResult``. The framework's priorities (-100..100, higher first) are Chancy's as they
are, its queue names are Chancy's queues, and ``run_after`` is the job's ``scheduled_at``."""

from __future__ import annotations

import uuid
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from chancy.job import Job
from chancy.store.pg.statements import single

from chancy.contrib.django import runner
from chancy.contrib.django.app import default_app
from chancy.contrib.django.conf import chancy_settings
from chancy.contrib.django.database import atomic_connection, database_dsn
from chancy.contrib.django.framework import BaseTaskBackend, InvalidTask, Task, TaskResult, \
    TaskResultDoesNotExist, TaskResultStatus, normalize_json, task_enqueued
from chancy.contrib.django.results import MARKER, task_result


class ChancyBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def validate_task(self, task: Task) -> None:
        """The framework's checks, Chancy's on the queue name; a valid Task becomes
        runnable by this process's workers (the framework validates each Task it creates)."""
        super().validate_task(task)
        if not task.queue_name or "\x00" in task.queue_name or len(task.queue_name) > 200:
            raise InvalidTask(f"Queue name {task.queue_name!r} is not valid for Chancy: use 1 to 200 characters, "
                              "no NUL")
        runner.register(task)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """``manage.py check``: without the app, workers would not import the task modules
        (their jobs would fail as unknown tasks); without Postgres there is no queue."""
        from django.apps import apps

        problems: list[checks.CheckMessage] = []
        if not apps.is_installed("chancy.contrib.django"):
            problems.append(checks.Error(
                f"TASKS[{self.alias!r}] uses Chancy's backend but chancy.contrib.django is not installed",
                hint='Add "chancy.contrib.django" to INSTALLED_APPS.', id="chancy.E001"))
        try:
            database_dsn(chancy_settings().database)
        except ImproperlyConfigured as exc:
            problems.append(checks.Error(str(exc), id="chancy.E002"))
        return problems

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        job = Job(task.module_path, args=normalize_json(list(args)), kwargs=normalize_json(dict(kwargs)),
                  queue=task.queue_name, priority=task.priority, scheduled_at=_aware(task.run_after),
                  meta={MARKER: self.alias})
        database = chancy_settings().database
        [ref] = default_app().push_many_sync([job], connection=atomic_connection(database))
        result = TaskResult(task=task, id=str(ref.id), status=TaskResultStatus.READY, enqueued_at=timezone.now(),
                            started_at=None, finished_at=None, last_attempted_at=None, args=list(job.args),
                            kwargs=dict(job.kwargs), backend=self.alias, errors=[], worker_ids=[])
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The job's row as a TaskResult; read inside an open ``transaction.atomic()`` on
        ``CHANCY['DATABASE']`` through that transaction (so a job enqueued in it is seen)."""
        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"{result_id!r} is not the id of a Chancy job") from None
        app = default_app()
        connection = atomic_connection(chancy_settings().database)
        record = app.store.run_sync(single(app.store.jobs.get(job_id)), connection=connection) \
            if connection is not None else app.get_job_sync(job_id)
        if record is None or MARKER not in record.meta:
            raise TaskResultDoesNotExist(f"No task result {result_id}: no job of the task framework has that id")
        task = runner.find(record.func)
        if task is None:
            raise TaskResultDoesNotExist(f"Job {result_id} runs {record.func!r}, which is not a task of an "
                                         "installed app (is its module importable here?)")
        return task_result(record, task)


def _aware(when: Any) -> Any:
    """``run_after`` as an aware datetime (with USE_TZ off the framework allows naive ones,
    in the current time zone)."""
    if when is not None and timezone.is_naive(when):
        return timezone.make_aware(when)
    return when
