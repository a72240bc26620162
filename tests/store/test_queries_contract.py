"""One contract for reading jobs by a filter (:class:`chancy.store.queries.JobQueries`):
each test runs on Postgres (``list_jobs`` in ``sql/admin.sql``) and in memory
(:mod:`chancy.store.memory_queries`), with the same expectations."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from chancy import Job
from chancy.job import JobState
from chancy.store.admin import JobSelection
from chancy.store.of_app import queries_of
from contract_support import TASK, Subject, job, one_job_in_every_state, push_one


def now() -> datetime:
    return datetime.now(timezone.utc)


async def ids(store: Subject, limit: int = 100, **selection: object) -> list:
    return [r.id for r in await queries_of(store.app).list_jobs(JobSelection(**selection), limit)]  # type: ignore[arg-type]


async def test_list_jobs_newest_first_up_to_the_limit(store: Subject) -> None:
    pushed = [await push_one(store.queue) for _ in range(4)]
    assert await ids(store) == pushed[::-1]
    assert await ids(store, limit=2) == pushed[:1:-1]
    assert [r.id for r in queries_of(store.app).list_jobs_sync(JobSelection(), 100)] == pushed[::-1]


async def test_list_jobs_by_state_queue_and_ids(store: Subject) -> None:
    by_state = await one_job_in_every_state(store.queue)
    other = await push_one(store.other)
    assert await ids(store, states=(JobState.FAILED, JobState.PENDING)) == sorted(
        [by_state[JobState.FAILED], by_state[JobState.PENDING], other], reverse=True)
    assert await ids(store, queues=("other",)) == [other]
    assert await ids(store, queues=("other",), states=(JobState.FAILED,)) == []
    assert await ids(store, ids=(by_state[JobState.RUNNING], other)) == [other, by_state[JobState.RUNNING]]


async def test_list_jobs_by_task_name_exact_or_in_part(store: Subject) -> None:
    [mine, theirs] = await store.queue.push([job(1), Job("other.Thing_%", args=[2])])
    assert await ids(store, task=TASK) == [mine]
    assert await ids(store, task_contains="CONTRACT.T") == [mine]
    assert await ids(store, task_contains="thing_%") == [theirs]  # LIKE's wildcards are plain characters
    assert await ids(store, task_contains="thing__") == []


async def test_list_jobs_by_argument_text_in_any_case(store: Subject) -> None:
    [a, b, c] = await store.queue.push([job(0, kwargs={"email": "Ann@Example.com"}), job(12345),
                                        job(0, kwargs={"note": "50%_off"})])
    assert await ids(store, text="ann@example") == [a]
    assert await ids(store, text="12345") == [b]
    assert await ids(store, text='"note": "50%_off"') == [c]  # as Postgres prints jsonb
    assert await ids(store, text="50%x") == []


async def test_list_jobs_by_creation_time(store: Subject) -> None:
    before = await push_one(store.queue)
    await asyncio.sleep(0.05)
    cut = now()
    await asyncio.sleep(0.05)
    after = await push_one(store.queue)
    # Postgres' clock and the test's may differ a little: a margin on each side
    assert await ids(store, since=cut - timedelta(seconds=0.04)) == [after]
    assert await ids(store, until=cut + timedelta(seconds=0.04)) == [before]
