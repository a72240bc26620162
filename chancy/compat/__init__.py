"""The Celery API on Chancy: change ``from celery import …`` to ``from chancy.compat
import …`` and the broker URL to a Postgres DSN; task definitions, calls, results,
canvas and beat schedules keep working, backed by Chancy job rows.

``chancy.compat`` does not need ``celery`` (an optional extra); where it is installed, its
signals are Celery's own (:mod:`chancy.compat.signals`)."""

from chancy.compat import states
from chancy.compat.app.base import Celery, shared_task
from chancy.compat.app.task import Task
from chancy.compat.canvas import (
    Signature, chain, chord, chunks, group, maybe_signature, signature, subtask, xmap, xstarmap,
)
from chancy.compat.local import current_app, current_task
from chancy.compat.result import AsyncResult, EagerResult, GroupResult
from chancy.compat.worker import worker_app


def uuid() -> str:
    """A new task id (time-ordered, unlike Celery's random ones)."""
    from chancy.job import new_job_id

    return str(new_job_id())


__all__ = [
    "AsyncResult", "Celery", "EagerResult", "GroupResult", "Signature", "Task", "chain", "chord", "chunks",
    "current_app", "current_task", "group", "maybe_signature", "shared_task", "signature", "states",
    "subtask", "uuid", "worker_app", "xmap", "xstarmap",
]
