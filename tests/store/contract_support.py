"""Helpers of the store contract suite: the store under test, jobs to push, a worker's
claims and outcomes, and a queue holding one job in every state."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from chancy import Chancy, Job
from chancy.job import JobRecord, JobState
from chancy.queue import QueuePlugin, Transition

#: The worker every test claims for, unless it says otherwise.
WORKER = "worker-1"
TASK = "contract.task"


@dataclasses.dataclass
class Subject:
    """One store under test: its app and two of its queues."""

    kind: str  # "postgres" or "memory"
    app: Chancy
    queue: QueuePlugin  # "default"
    other: QueuePlugin  # "other"


def now() -> datetime:
    return datetime.now(timezone.utc)


def job(i: int = 0, **options: Any) -> Job:
    """A job of :data:`TASK` for the "default" queue (``i``: its one argument)."""
    return Job(TASK, args=[i], **options)


async def push_one(queue: QueuePlugin, **options: Any) -> uuid.UUID:
    return (await queue.push([job(queue=queue.name, **options)]))[0]


async def record(queue: QueuePlugin, job_id: uuid.UUID) -> JobRecord:
    found = await queue.get(job_id)
    assert found is not None, f"no job {job_id}"
    return found


async def claim_one(queue: QueuePlugin, worker: str = WORKER) -> JobRecord:
    claimed = await queue.claim(worker, 1)
    assert len(claimed) == 1, claimed
    return claimed[0]


def outcome(claimed: JobRecord, state: JobState, **fields: Any) -> Transition:
    """The outcome of the attempt ``claimed`` is (the attempt named, as a worker does)."""
    return Transition(job_id=claimed.id, state=state, attempt=claimed.attempts, **fields)


def failure(message: str = "boom") -> dict[str, Any]:
    return {"type": "ValueError", "message": message, "traceback": None}


async def one_job_in_every_state(queue: QueuePlugin, unique: bool = False) -> dict[JobState, uuid.UUID]:
    """A job in each state, made with the contract's own operations; ``unique``: each
    with the unique key ``key-<state>``. Jobs a claim must take are made while nothing
    else is runnable; the pending one last."""

    def options(state: JobState, **more: Any) -> dict[str, Any]:
        return {"unique_key": f"key-{state.value}", **more} if unique else more

    async def claimed_as(state: JobState, **more: Any) -> JobRecord:
        await push_one(queue, **options(state, **more))
        return await claim_one(queue)

    ids: dict[JobState, uuid.UUID] = {}
    running = await claimed_as(JobState.RUNNING)
    ids[JobState.RUNNING] = running.id
    for state in (JobState.RETRYING, JobState.SUCCEEDED, JobState.FAILED):
        claimed = await claimed_as(state, max_attempts=2)
        await queue.write_back(WORKER, [outcome(claimed, state, delay=3600, error=failure())])
        ids[state] = claimed.id
    ids[JobState.CANCELLED] = await push_one(queue, **options(JobState.CANCELLED))
    assert await queue.cancel(ids[JobState.CANCELLED])
    ids[JobState.EXPIRED] = await push_one(queue, **options(JobState.EXPIRED, expires_at=now() - timedelta(seconds=1)))
    assert await queue.claim(WORKER, 1) == []
    later = now() + timedelta(hours=1)
    ids[JobState.SCHEDULED] = await push_one(queue, **options(JobState.SCHEDULED, scheduled_at=later))
    ids[JobState.PENDING] = await push_one(queue, **options(JobState.PENDING))
    states = {state: (await record(queue, job_id)).state for state, job_id in ids.items()}
    assert states == {state: state for state in ids}, states
    return ids
