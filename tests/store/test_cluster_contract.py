"""One contract for the cluster's side of every store (:class:`chancy.store.cluster.ClusterStore`):
each test body runs on Postgres (a fresh database) and in memory, with the same
expectations. The rules the in-memory store (:mod:`chancy.store.memory_cluster`) keeps in
Python where Postgres keeps them in SQL, by statement, each pair proven to agree by the
tests named:

- heartbeat (``worker.sql`` ``heartbeat`` / ``MemoryCluster.heartbeat``): ``test_heartbeat_*``.
- recovery (``cluster.sql`` ``recover`` + ``worker.sql`` ``delay_retries`` /
  ``memory_cluster._recovered``): ``test_recover_*``.
- pruning (``cluster.sql`` ``prune`` / ``MemoryCluster.prune``): ``test_prune_*``.
- queue settings and the claim obeying them (``queue_settings.sql``, the claim's
  ``settings``/``rate`` CTEs in ``jobs.sql`` / ``MemoryCluster.change_queue``,
  ``memory.QueueRow.room``): ``test_queue_*``.
- the leader seat (``leadership.sql`` / ``MemoryLeaderLock``): ``test_leader_*``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from chancy import Backoff
from chancy.job import JobRecord, JobState
from chancy.store.cluster import FOREVER, ClusterStore, QueueChange
from chancy.store.of_app import cluster_of
from contract_support import WORKER, Subject, claim_one, one_job_in_every_state, push_one, record

#: Slack for comparing a store's clock (the database's, for Postgres) with the test's.
CLOCK_SLACK = timedelta(seconds=2)
TTL = 60.0


def now() -> datetime:
    return datetime.now(timezone.utc)


def cluster(store: Subject) -> ClusterStore:
    return cluster_of(store.app)


async def beat(store: Subject, worker: str = WORKER, running: tuple[uuid.UUID, ...] = (),
               ttl: float = TTL) -> list[uuid.UUID]:
    return await cluster(store).heartbeat(worker, hostname="host", pid=1, queues=["default"], tags=[],
                                          running=list(running), ttl=ttl)


async def expire(store: Subject, worker: str) -> None:
    """Make ``worker`` dead by the liveness rule (its last beat's ttl already over)."""
    await beat(store, worker, ttl=0.001)
    await asyncio.sleep(0.05)


# --- liveness ----------------------------------------------------------------------------------------
async def test_heartbeat_answers_the_jobs_no_longer_the_workers(store: Subject) -> None:
    mine = await claim_one_pushed(store)
    cancelled = await claim_one_pushed(store)
    assert await store.queue.cancel(cancelled.id)
    theirs = await claim_one_pushed(store, worker="worker-2")
    never_pushed = uuid.uuid4()

    lost = await beat(store, running=(mine.id, cancelled.id, theirs.id, never_pushed))

    assert sorted(lost) == sorted([cancelled.id, theirs.id])  # a job the store never held is not news


async def test_heartbeat_keeps_a_worker_alive_so_recovery_leaves_its_jobs(store: Subject) -> None:
    mine = await claim_one_pushed(store)
    await beat(store)

    assert await cluster(store).recover(100, store.app.hooks) == {}
    assert (await record(store.queue, mine.id)).state is JobState.RUNNING


async def test_deregister_makes_a_workers_jobs_recoverable(store: Subject) -> None:
    mine = await claim_one_pushed(store, max_attempts=3)
    await beat(store)
    await cluster(store).deregister(WORKER)

    assert await cluster(store).recover(100, store.app.hooks) == {mine.id: "retrying"}


# --- recovery ---------------------------------------------------------------------------------------
async def test_recover_retries_a_lost_attempt_after_its_backoff_with_an_error(store: Subject) -> None:
    lost = await claim_one_pushed(store, max_attempts=3, backoff=Backoff(base=600, jitter=False))
    await expire(store, WORKER)
    before = now()

    assert await cluster(store).recover(100, store.app.hooks) == {lost.id: "retrying"}

    back = await record(store.queue, lost.id)
    assert (back.state, back.attempts, back.completed_at) == (JobState.RETRYING, 1, None)
    due = before + timedelta(seconds=600)
    assert due - CLOCK_SLACK <= back.scheduled_at <= due + CLOCK_SLACK
    error = back.errors[-1]
    assert (error["type"], error["attempt"], error["worker"]) == ("chancy.WorkerLost", 1, WORKER)
    assert f"worker {WORKER} stopped heartbeating while running attempt 1 of 3" == error["message"]


async def test_recover_fails_a_lost_job_out_of_attempts_and_wakes_its_waiters(store: Subject) -> None:
    lost = await claim_one_pushed(store, max_attempts=1)
    await expire(store, WORKER)
    waiter = asyncio.ensure_future(store.queue.wait(lost.id, timeout=10))
    await asyncio.sleep(0.05)

    assert await cluster(store).recover(100, store.app.hooks) == {lost.id: "failed"}

    done = await waiter
    assert (done.state, done.attempts, done.errors[-1]["type"]) == (JobState.FAILED, 1, "chancy.WorkerLost")
    assert done.completed_at is not None


async def test_recover_takes_jobs_of_workers_that_never_registered(store: Subject) -> None:
    lost = await claim_one_pushed(store, max_attempts=2, worker="never-beat")
    assert await cluster(store).recover(100, store.app.hooks) == {lost.id: "retrying"}


async def test_recover_forgets_dead_workers_and_goes_batch_by_batch(store: Subject) -> None:
    lost = [await claim_one_pushed(store, max_attempts=2) for _ in range(3)]
    await expire(store, WORKER)

    first = await cluster(store).recover(2, store.app.hooks)
    second = await cluster(store).recover(2, store.app.hooks)

    assert len(first) == 2 and len(second) == 1
    assert {**first, **second} == {job.id: "retrying" for job in lost}
    assert await cluster(store).recover(2, store.app.hooks) == {}


async def test_recover_leaves_every_job_not_running(store: Subject) -> None:
    ids = await one_job_in_every_state(store.queue)
    await expire(store, WORKER)
    recovered = await cluster(store).recover(100, store.app.hooks)
    assert recovered == {ids[JobState.RUNNING]: "failed"}  # one attempt of one: out of attempts
    for state, job_id in ids.items():
        if state is not JobState.RUNNING:
            assert (await record(store.queue, job_id)).state is state


async def test_recover_gives_a_prefetched_job_back_unstarted_without_an_attempt(pg_store: Subject) -> None:
    """Postgres only: the in-memory store never prefetches (its claim starts every job)."""
    await push_one(pg_store.queue, max_attempts=1)
    [prefetched] = await pg_store.queue.claim(WORKER, 1, start=0)
    assert prefetched.started_at is None

    assert await cluster(pg_store).recover(100, pg_store.app.hooks) == {prefetched.id: "pending"}

    back = await record(pg_store.queue, prefetched.id)
    assert (back.state, back.attempts, back.taken_by, back.errors) == (JobState.PENDING, 0, None, [])


# --- pruning ----------------------------------------------------------------------------------------
async def test_prune_deletes_only_finished_jobs_of_the_chosen_states_and_queues(store: Subject) -> None:
    ids = await one_job_in_every_state(store.queue)
    other = await push_one(store.other)
    assert await store.other.cancel(other)
    await asyncio.sleep(0.05)

    deleted = await cluster(store).prune(["succeeded", "failed", "cancelled"], 0.01, ["default"], 100)

    assert deleted == 3
    for state, job_id in ids.items():
        gone = state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
        assert (await store.queue.get(job_id) is None) == gone, state
    assert (await record(store.other, other)).state is JobState.CANCELLED  # another queue: kept


async def test_prune_keeps_jobs_finished_recently_and_deletes_in_batches(store: Subject) -> None:
    for _ in range(3):
        assert await store.queue.cancel(await push_one(store.queue))
    assert await cluster(store).prune(["cancelled"], 3600, None, 100) == 0
    await asyncio.sleep(0.05)
    assert await cluster(store).prune(["cancelled"], 0.01, None, 2) == 2
    assert await cluster(store).prune(["cancelled"], 0.01, None, 2) == 1


# --- queue settings --------------------------------------------------------------------------------
async def test_queue_settings_read_back_by_name(store: Subject) -> None:
    facet = cluster(store)
    await facet.change_queue("default", QueueChange(concurrency=4, set_concurrency=True, rate=(10, 2.0),
                                                    set_rate=True))
    facet.change_queue_sync("other", QueueChange(pause=FOREVER, set_pause=True))

    default, other = await facet.queue_settings()
    assert (default.name, default.concurrency, default.paused_until, default.rate_limit, default.rate_period) == (
        "default", 4, None, 10, 2.0)
    assert other.name == "other" and other.paused and other.paused_until_resumed
    assert facet.queue_settings_sync(["other"]) == [other]
    assert await facet.queue_settings(["nothing"]) == []


async def test_queue_change_touches_only_the_settings_it_sets(store: Subject) -> None:
    facet = cluster(store)
    await facet.change_queue("default", QueueChange(concurrency=4, set_concurrency=True, rate=(10, 2.0),
                                                    set_rate=True))
    await facet.change_queue("default", QueueChange(pause=30.0, set_pause=True))
    [paused] = await facet.queue_settings()
    assert (paused.concurrency, paused.rate_limit) == (4, 10)
    assert paused.paused_until is not None
    ends = now() + timedelta(seconds=30)
    assert ends - CLOCK_SLACK <= paused.paused_until <= ends + CLOCK_SLACK

    await facet.change_queue("default", QueueChange(concurrency=None, set_concurrency=True))
    [changed] = await facet.queue_settings()
    assert (changed.concurrency, changed.rate_limit, changed.paused_until) == (None, 10, paused.paused_until)


async def test_queue_paused_is_not_claimed_until_resumed_or_its_pause_ends(store: Subject) -> None:
    facet = cluster(store)
    job_id = await push_one(store.queue)
    await facet.change_queue("default", QueueChange(pause=FOREVER, set_pause=True))
    assert await store.queue.claim(WORKER, 10) == []

    await facet.change_queue("default", QueueChange(pause=0.2, set_pause=True))
    assert await store.queue.claim(WORKER, 10) == []
    await asyncio.sleep(0.3)
    [settings] = await facet.queue_settings()
    assert settings.paused_until is None  # a pause already over reads as none
    assert [r.id for r in await store.queue.claim(WORKER, 10)] == [job_id]


async def test_queue_resumed_is_claimed_again(store: Subject) -> None:
    facet = cluster(store)
    job_id = await push_one(store.queue)
    facet.change_queue_sync("default", QueueChange(pause=FOREVER, set_pause=True))
    assert await store.queue.claim(WORKER, 10) == []
    facet.change_queue_sync("default", QueueChange(pause=None, set_pause=True))
    assert [r.id for r in await store.queue.claim(WORKER, 10)] == [job_id]


async def test_queue_rate_limit_caps_starts_in_its_window(store: Subject) -> None:
    await cluster(store).change_queue("default", QueueChange(rate=(2, 60.0), set_rate=True))
    for _ in range(5):
        await push_one(store.queue)
    assert len(await store.queue.claim(WORKER, 10)) == 2
    assert await store.queue.claim("worker-2", 10) == []  # counted across workers
    assert len(await store.other.claim(WORKER, 10)) == 0  # the other queue has no jobs, nor limit

    await cluster(store).change_queue("default", QueueChange(rate=None, set_rate=True))
    assert len(await store.queue.claim(WORKER, 10)) == 3


async def test_queue_delete_drops_settings_and_purges_only_waiting_jobs(store: Subject) -> None:
    facet = cluster(store)
    ids = await one_job_in_every_state(store.queue)
    await facet.change_queue("default", QueueChange(concurrency=2, set_concurrency=True))

    assert await facet.delete_queue("default", purge=False) == 0
    assert await facet.queue_settings() == []
    assert facet.delete_queue_sync("default", purge=True) == 3  # pending, scheduled, retrying

    for state, job_id in ids.items():
        waiting = state in (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING)
        assert (await store.queue.get(job_id) is None) == waiting, state


# --- the leader seat -------------------------------------------------------------------------------
async def test_leader_seat_has_one_holder_until_it_gives_it_up(store: Subject) -> None:
    facet = cluster(store)
    first, second = facet.leader_lock("leader-1"), facet.leader_lock("leader-2")
    await first.open()
    await second.open()
    try:
        assert await first.try_lock() and await first.try_lock()  # held already: still True
        assert not await second.try_lock()
        assert await facet.current_leader() == "leader-1"
        await first.probe(5)

        await first.close()
        assert await second.try_lock()
        assert await facet.current_leader() == "leader-2"
    finally:
        await first.close()
        await second.close()
    assert await facet.current_leader() is None


async def test_leader_seat_of_a_dead_worker_is_taken_over_and_it_steps_down(store: Subject) -> None:
    facet = cluster(store)
    dead, alive = facet.leader_lock("leader-1"), facet.leader_lock("leader-2")
    await dead.open()
    await alive.open()
    try:
        await beat(store, "leader-1")
        assert await dead.try_lock()
        assert not await alive.depose_dead_leader()  # its worker heartbeats: alive

        await expire(store, "leader-1")
        assert await alive.depose_dead_leader()
        await asyncio.sleep(0.2)  # Postgres: the ended session lets go of the lock
        assert await alive.try_lock()
        assert await facet.current_leader() == "leader-2"
        with pytest.raises((psycopg.OperationalError, RuntimeError)):  # its session ended / the seat is gone
            await dead.probe(2)  # the deposed leader learns it at its next probe
    finally:
        await dead.close()
        await alive.close()


# --- helpers -------------------------------------------------------------------------------------------
async def claim_one_pushed(store: Subject, worker: str = WORKER, **options: object) -> JobRecord:
    """A job pushed on the default queue and claimed (started) by ``worker``."""
    await push_one(store.queue, **options)
    return await claim_one(store.queue, worker)

