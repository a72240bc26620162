"""Celery's exception classes, so ``except`` clauses keep working after the import change."""

from __future__ import annotations

import sys
from typing import Any

from chancy import errors


class CeleryError(Exception):
    """Base class of the Celery-compatible errors."""


class TaskPredicate(CeleryError):
    """Base class of the exceptions that steer what happens to a task."""


class Retry(TaskPredicate, errors.Retry):
    """Raised by ``task.retry()``: the worker runs the same task id again after
    ``countdown`` seconds (a core :class:`chancy.errors.Retry`)."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: Any = None, is_eager: bool = False, sig: Any = None,
                 countdown: float | None = None, max_attempts: int | None = None) -> None:
        errors.Retry.__init__(self, countdown=countdown, exc=exc, max_attempts=max_attempts)
        self.message = message
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        self.args = (message, exc, when)

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """Raised by a task to leave its state as it is (e.g. after ``update_state``)."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message; ``requeue=True`` runs it again."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        super().__init__(reason, requeue)
        self.reason = reason
        self.requeue = requeue


class MaxRetriesExceededError(CeleryError):
    """``retry()`` was called after the task used up ``max_retries``."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None, **kwargs: Any) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TimeoutError(CeleryError):  # noqa: A001 - Celery's name
    """``AsyncResult.get(timeout=…)`` ran out of time."""


class SoftTimeLimitExceeded(CeleryError):
    """The task ran past its ``soft_time_limit``."""


class TimeLimitExceeded(CeleryError):
    """The task ran past its hard ``time_limit`` and was stopped."""


class TaskRevokedError(CeleryError):
    """The task was revoked (``AsyncResult.get()`` of a REVOKED task raises this)."""


class NotRegistered(KeyError, CeleryError):
    """No task of that name is registered with the app."""


class ImproperlyConfigured(ImportError):
    """The app's configuration is wrong; the message says what to change."""


class ChordError(CeleryError):
    """A task of a chord's header failed, so its body cannot run."""


class QueueNotFound(KeyError, CeleryError):
    """A task was routed to a queue that ``task_create_missing_queues=False`` forbids."""


def exception_info() -> Any:
    """The exception being handled, as Celery hands it to ``on_failure``/``on_retry`` and the
    failure signals: billiard's ``ExceptionInfo`` (``.exception``, ``.traceback``, which
    integrations look for) when celery is installed, else ``sys.exc_info()``."""
    try:
        from billiard.einfo import ExceptionInfo
    except ImportError:
        return sys.exc_info()
    return ExceptionInfo()
