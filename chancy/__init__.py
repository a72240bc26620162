"""Chancy: a Postgres-backed task queue for Python, with a Celery-compatible layer.

The public names below load on first use, not at ``import chancy``: pytest loads our
plugin (``chancy.pytest_plugin``) in every project where Chancy is installed, and the
command-line tools import submodules only; neither should pay for the app, psycopg and the
worker when it does not use them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "Chancy": "chancy.app",
    **dict.fromkeys(("ChancyError", "ConfigurationError", "DatabaseUnavailableError", "Retry",
                     "SchemaOutOfDateError", "SerializationError", "UnknownTaskError"), "chancy.errors"),
    "current_job": "chancy.execution",
    **dict.fromkeys(("Backoff", "Job", "JobRecord", "JobState", "Limit", "Reference"), "chancy.job"),
    "Queue": "chancy.queues.pg",
    "Task": "chancy.task",
    "Worker": "chancy.worker",
}

# Spelled out (not ``sorted(_HOMES)``) so that linters and type checkers see the names the
# imports above re-export; tests/core/test_public_names.py checks it matches ``_HOMES``.
__all__ = [
    "Backoff",
    "Chancy",
    "ChancyError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Job",
    "JobRecord",
    "JobState",
    "Limit",
    "Queue",
    "Reference",
    "Retry",
    "SchemaOutOfDateError",
    "SerializationError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "current_job",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chancy' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
