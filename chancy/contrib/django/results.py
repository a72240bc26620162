"""A job row as Django's task framework sees it: a ``TaskResult`` with the framework's
four statuses, its errors as ``TaskError`` and one worker id per attempt."""

from __future__ import annotations

import traceback

from chancy.job import JobRecord, JobState

from chancy.contrib.django.framework import Task, TaskError, TaskResult, TaskResultStatus

#: The job's meta key that marks a job pushed through the framework; it holds the alias of
#: the TASKS backend that pushed it.
MARKER = "django_task_backend"

#: Chancy's states in the framework's terms: waiting to run (again) is READY; cancelled and
#: expired jobs never ran to success, which the framework calls FAILED.
STATUSES = {
    JobState.PENDING: TaskResultStatus.READY,
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.RETRYING: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
    JobState.EXPIRED: TaskResultStatus.FAILED,
}


def task_error(exc: BaseException) -> TaskError:
    return TaskError(exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                     traceback="".join(traceback.format_exception(exc)))


def task_result(record: JobRecord, task: Task) -> TaskResult:
    """The framework's view of ``record``, a job running ``task``. Chancy keeps the worker
    of the latest attempt only: ``worker_ids`` repeats it once per attempt, so that
    ``attempts`` (their count) is right."""
    result = TaskResult(
        task=task,
        id=str(record.id),
        status=STATUSES[record.state],
        enqueued_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.completed_at,
        last_attempted_at=record.started_at,
        args=list(record.args),
        kwargs=dict(record.kwargs),
        backend=record.meta.get(MARKER) or task.backend,
        errors=[TaskError(exception_class_path=error.get("type", ""), traceback=error.get("traceback", ""))
                for error in record.errors],
        worker_ids=[record.taken_by or "unknown"] * record.attempts,
    )
    if record.state is JobState.SUCCEEDED:
        object.__setattr__(result, "_return_value", record.result)
    return result
