"""Exceptions a Chancy user can catch, each saying what to do about it."""

from __future__ import annotations


class ChancyError(Exception):
    """Base class of every error Chancy raises on purpose."""


class ConfigurationError(ChancyError, ValueError):
    """An option or setting is invalid; the message names it and the valid choices."""


class SerializationError(ChancyError, TypeError):
    """Arguments or a result cannot be stored as JSON."""


class ResultNotStorableError(SerializationError):
    """A task returned a value that cannot be stored (not JSON, or text Postgres refuses);
    the job fails with this error instead of holding up its queue."""


class DatabaseUnavailableError(ChancyError):
    """The database cannot be reached (bad DSN, server down, wrong credentials)."""


class SchemaOutOfDateError(ChancyError):
    """The database schema is older than this code; run ``chancy migrate``."""


class UnknownTaskError(ChancyError):
    """No task with the job's name exists in the process that tried to run it."""


class JobTimeoutError(ChancyError, TimeoutError):
    """A job exceeded its time limit."""


class JobMemoryError(ChancyError, MemoryError):
    """A job exceeded its memory limit."""


class JobCancelledError(ChancyError):
    """A running job was cancelled."""


class Retry(ChancyError):
    """Raised by a task to ask for another attempt.

    ``countdown`` overrides the backoff for this retry; ``max_attempts`` raises or lowers
    the job's attempt budget; ``exc`` is recorded as the reason.
    """

    def __init__(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(f"Retry requested{f' in {countdown}s' if countdown is not None else ''}")
        self.countdown = countdown
        self.exc = exc
        self.max_attempts = max_attempts


class Fail(ChancyError):
    """Raised by a task (or a layer wrapping tasks) to fail this attempt for good, with no
    retry whatever the attempt budget; ``exc`` is recorded as the reason. The attempt
    budget still covers a worker that dies mid-job."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc
