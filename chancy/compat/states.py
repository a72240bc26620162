"""Celery's task state names, and how Chancy's job states read as them."""

from __future__ import annotations

from chancy.job import JobState

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})

_FROM_JOB_STATE = {
    JobState.PENDING: PENDING,
    JobState.SCHEDULED: PENDING,
    JobState.RUNNING: STARTED,
    JobState.RETRYING: RETRY,
    JobState.SUCCEEDED: SUCCESS,
    JobState.FAILED: FAILURE,
    JobState.CANCELLED: REVOKED,
    JobState.EXPIRED: REVOKED,
}


def from_job_state(state: JobState, *, track_started: bool = True, custom: str | None = None) -> str:
    """The Celery state of a job row. A running job reads as its custom ``update_state``
    state if it set one, else STARTED (PENDING when the task does not track starts)."""
    if state is JobState.RUNNING:
        if custom:
            return custom
        return STARTED if track_started else PENDING
    return _FROM_JOB_STATE[state]
