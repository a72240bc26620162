"""Chancy: a Postgres-backed task queue for Python, with a Celery-compatible layer."""

from chancy.app import Chancy
from chancy.errors import (
    ChancyError,
    ConfigurationError,
    DatabaseUnavailableError,
    Retry,
    SchemaOutOfDateError,
    SerializationError,
    UnknownTaskError,
)
from chancy.execution import current_job
from chancy.job import Backoff, Job, JobRecord, JobState, Limit, Reference
from chancy.queues.pg import Queue
from chancy.task import Task
from chancy.worker import Worker

__all__ = [
    "Backoff", "Chancy", "ChancyError", "ConfigurationError", "DatabaseUnavailableError",
    "Job", "JobRecord", "JobState", "Limit", "Queue", "Reference", "Retry",
    "SchemaOutOfDateError", "SerializationError", "Task", "UnknownTaskError", "Worker",
    "current_job",
]
