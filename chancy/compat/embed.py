"""What a Celery worker does after a task, done by a Chancy worker for rows that came
from a Celery producer: send the ``link`` callbacks and the next step of the chain with
the result, or the ``link_error`` errbacks with the task id, as carried in the message's
embed (``meta["celery"]``). The new jobs are inserted in the transaction that records
the outcome (a core completion hook), so a crash neither loses nor repeats them.

Rows applied through ``chancy.compat`` carry ``meta["canvas"]`` instead and are advanced
by :mod:`chancy.compat.continuations`; this hook leaves them alone."""

from __future__ import annotations

from typing import Callable

from chancy import serialization
from chancy.app import Chancy
from chancy.compat.protocol import celery_task_id, job_from_signature
from chancy.job import Job, JobRecord, JobState
from chancy.queue import Transition
from chancy.store.pg.jobs import push_steps
from chancy.store.pg.statements import Steps


def next_jobs(record: JobRecord, transition: Transition) -> list[Job]:
    """The jobs the finished ``record``'s embed asks for, given its outcome."""
    celery = record.meta.get("celery")
    if not celery:  # every job not sent by a Celery producer: no result to decode
        return []
    if transition.state is JobState.SUCCEEDED:
        callbacks, chain = celery.get("callbacks") or (), list(celery.get("chain") or ())
        if not (callbacks or chain):
            return []
        result = serialization.loads(transition.result_json) if transition.result_json else None
        jobs = [job_from_signature(sig, record, (result,)) for sig in callbacks]
        if chain:  # the rest of a chain travels reversed: the next step is the last one
            jobs.append(job_from_signature(chain[-1], record, (result,), chain=chain[:-1]))
        return jobs
    if transition.state is JobState.FAILED:
        return [job_from_signature(sig, record, (celery_task_id(record),)) for sig in celery.get("errbacks") or ()]
    return []


def continue_embed(app: Chancy, record: JobRecord, transition: Transition) -> Callable[[], Steps] | None:
    """A completion hook of every app (declared as an entry point of the group
    :data:`chancy.hooks.HOOKS_GROUP` in pyproject.toml)."""
    if "canvas" in record.meta:
        return None
    jobs = next_jobs(record, transition)
    if not jobs:
        return None
    return lambda: push_steps(app.store.jobs, jobs)
