"""What an attempt's outcome does to its job row, and the worker's log line of each start
and outcome."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from chancy import serialization
from chancy.execution import Outcome
from chancy.job import JobRecord, JobState
from chancy.queue import Transition

log = logging.getLogger("chancy.worker")


def decide(record: JobRecord, outcome: Outcome) -> Transition:
    """What one attempt's outcome does to its job row."""
    if outcome.succeeded:
        return Transition(record.id, JobState.SUCCEEDED, result_json=outcome.result_json,
                          attempt=record.attempts)
    if outcome.cancelled:
        return Transition(record.id, JobState.CANCELLED, error=outcome.error, attempt=record.attempts)
    max_attempts = outcome.max_attempts or record.max_attempts
    retry_requested = outcome.retry_in is not None
    if record.attempts < max_attempts and (retry_requested or not outcome.final):
        if retry_requested and outcome.retry_in is not None and outcome.retry_in >= 0:
            delay = outcome.retry_in
        else:
            delay = record.retry_delay()
        return Transition(record.id, JobState.RETRYING, error=outcome.error, delay=delay,
                          max_attempts=outcome.max_attempts, attempt=record.attempts)
    return Transition(record.id, JobState.FAILED, error=outcome.error, max_attempts=outcome.max_attempts,
                      attempt=record.attempts)


def worker_error(kind: str, message: str) -> dict[str, Any]:
    """An error the worker itself records on a job (``chancy.<kind>``), not a task's."""
    return serialization.storable({"type": f"chancy.{kind}", "at": datetime.now(timezone.utc).isoformat(),
                                   "traceback": None, "message": message})


def with_start(record: JobRecord, started_at: datetime | None) -> JobRecord:
    """``record`` with its start time: a copy of its fields, which costs a third of
    ``dataclasses.replace`` (that runs the frozen ``__init__`` again), paid for every job."""
    return type(record).from_fields(**{**record.__dict__, "started_at": started_at})


def claim_order(record: JobRecord) -> tuple[int, uuid.UUID]:
    """The claim's order (priority, then age: job ids grow with time); its answer has none."""
    return -record.priority, record.id


def _job_fields(record: JobRecord) -> dict[str, Any]:
    """The fields of a job's log lines, for structured (JSON) logging: see chancy.logs."""
    return {"job_id": str(record.id), "task": record.func, "queue": record.queue,
            "attempt": record.attempts, "max_attempts": record.max_attempts}


def log_start(record: JobRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("job %s task=%s queue=%s attempt=%d/%d started", record.id, record.func, record.queue,
                 record.attempts, record.max_attempts, extra=_job_fields(record))


def log_outcome(record: JobRecord, transition: Transition) -> None:
    level = logging.INFO if transition.state is JobState.SUCCEEDED else logging.WARNING
    if log.isEnabledFor(level):
        duration = (time.time() - record.started_at.timestamp()) if record.started_at else 0.0
        error = f"{transition.error['type']}: {transition.error['message']}" if transition.error else None
        fields = {**_job_fields(record), "outcome": transition.state.value, "duration": round(duration, 6),
                  "error": error}
        log.log(level, "job %s task=%s queue=%s attempt=%d/%d outcome=%s duration=%.3fs%s",
                record.id, record.func, record.queue, record.attempts, record.max_attempts,
                transition.state.value, duration, f" error={error}" if error else "", extra=fields)
