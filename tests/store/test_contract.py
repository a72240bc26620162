"""One contract, every store: each test body runs on the Postgres queue (a fresh database)
and on the in-memory queue, with the same expectations (:class:`chancy.store.protocol.JobStore`
says what they are). A behaviour only one store has is tested under ``pg_store`` or
``memory_store``, with the reason in the test.

The rules the in-memory store (:mod:`chancy.store.memory`) keeps in Python where the
Postgres store keeps them in SQL (``chancy/store/pg/sql/jobs.sql`` and ``rates.sql``, by
statement name), each pair proven to agree by the tests named:

- push: scheduled or pending by ``scheduled_at``; a live holder of the unique key wins,
  across queues (``insert_*`` with ``insert_unique_key``'s ``ON CONFLICT``, then
  ``live_by_unique_key`` / ``MemoryQueue.push_sync``, ``MemoryQueue._live_holder``):
  ``test_push_*``, ``test_unique_key_*``.
- claim: runnable rows (pending; scheduled or retrying once due), best priority then
  oldest, expiry at claim (``claim``, ``write_back_and_claim`` / ``MemoryQueue.claim``):
  ``test_claim_*``, ``test_expired_*``, ``test_write_back_and_claim_*``.
- per-key concurrency: a job of a key starts only while fewer than its limit of its
  queue's jobs of that key run; jobs of a full key are passed over (no attempt used),
  never waited for (``claim`` leaves keyed rows to ``claim_keyed`` / ``MemoryQueue._choose``):
  ``test_keyed_*``.
- write-back: the guard (running, held by the writer, the attempt named) and the fields an
  outcome sets (``write_back`` / ``MemoryQueue.write_back``): ``test_write_back_*``.
- cancel and requeue: which states they take, through any queue (``cancel``, ``requeue``,
  ``get`` / ``MemoryQueue.cancel_sync``, ``requeue_sync``, ``get_sync``): ``test_cancel_*``,
  ``test_requeue_*``, ``test_any_queue_*``.
- the rate gate: who starts now and when the others are due, one window per task across
  queues (rates.sql ``gate`` / :func:`chancy.rate_limits.settle` in ``MemoryQueue.gate``):
  ``test_gate_*`` (and ``settle`` alone in test_pure_logic.py).

``release_unknown`` and the claim's ``start`` are Postgres-only: the in-memory store's
claims cannot lose their answer, so it neither releases nor prefetches.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from chancy import Backoff, Job, Limit
from chancy.errors import SerializationError
from chancy.job import FINISHED_STATES, LIVE_STATES, JobState
from chancy.queue import Transition
from chancy.rate_limits import RateLimit
from contract_support import (TASK, WORKER, Subject, claim_one, failure, job, now, one_job_in_every_state, outcome,
                              push_one, record)

#: Slack for comparing a store's clock (the database's, for Postgres) with the test's.
CLOCK_SLACK = timedelta(seconds=2)


# --- pushing ---------------------------------------------------------------------------------------
async def test_push_stores_each_job_as_given(store: Subject) -> None:
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    marker = uuid.uuid4()
    at, expires = now() + timedelta(hours=1), now() + timedelta(hours=2)
    full = job(1, kwargs={"when": when, "marker": marker, "nested": {"a": [1, 2.5, None]}}, priority=5,
               max_attempts=3, scheduled_at=at, expires_at=expires, unique_key="k",
               limits=[Limit(Limit.Type.TIME, 30)], backoff=Backoff(base=2, jitter=False),
               meta={"celery": {"root_id": "r"}})
    before = now()
    full_id, plain_id = await store.queue.push([full, job(2)])
    stored, plain = await record(store.queue, full_id), await record(store.queue, plain_id)

    assert (stored.queue, stored.func, stored.args, stored.kwargs) == (
        "default", TASK, (1,), {"when": when, "marker": marker, "nested": {"a": [1, 2.5, None]}})
    assert (stored.state, stored.priority, stored.attempts, stored.max_attempts) == (JobState.SCHEDULED, 5, 0, 3)
    assert (stored.scheduled_at, stored.expires_at, stored.unique_key) == (at, expires, "k")
    assert (stored.limits, stored.backoff, stored.meta) == (
        (Limit(Limit.Type.TIME, 30),), Backoff(base=2, jitter=False), {"celery": {"root_id": "r"}})
    assert (stored.started_at, stored.completed_at, stored.taken_by, stored.result, stored.errors) == (
        None, None, None, None, [])
    assert (plain.state, plain.priority, plain.max_attempts, plain.limits, plain.backoff, plain.meta) == (
        JobState.PENDING, 0, 1, (), None, {})
    assert before - CLOCK_SLACK <= plain.created_at <= plain.scheduled_at <= now() + CLOCK_SLACK
    assert plain.expires_at is None and plain.unique_key is None


async def test_push_returns_ids_in_order_keeping_given_ones(store: Subject) -> None:
    given = uuid.uuid4()
    ids = await store.queue.push([job(0), job(1, id=given), job(2)])
    assert ids[1] == given and len(set(ids)) == 3
    assert [(await record(store.queue, i)).args for i in ids] == [(0,), (1,), (2,)]
    assert store.queue.push_sync([job(3)]) != store.queue.push_sync([job(3)])


@pytest.mark.parametrize("bad", [Job(TASK, args=[object()]), Job(TASK, kwargs={"x": float("nan")}),
                                 Job(TASK, meta={"x": object()}), Job(TASK, meta={"x": float("inf")})],
                         ids=["args", "kwargs", "meta", "meta-inf"])
async def test_push_of_a_job_that_cannot_be_stored_stores_none_of_its_batch(store: Subject, bad: Job) -> None:
    with pytest.raises(SerializationError, match="contract.task"):
        await store.queue.push([job(1), bad])
    with pytest.raises(SerializationError, match="contract.task"):
        store.queue.push_sync([job(1), bad])
    with pytest.raises(SerializationError, match="contract.task"):
        store.queue.push_sync([bad])
    assert await store.queue.claim(WORKER, 10) == []


async def test_push_reusing_a_stored_id_fails_and_changes_nothing(store: Subject) -> None:
    taken = await push_one(store.queue)
    with pytest.raises((RuntimeError, psycopg.IntegrityError)):
        await store.queue.push([job(7, id=taken)])
    with pytest.raises((RuntimeError, psycopg.IntegrityError)):
        store.queue.push_sync([job(7, id=taken)])
    assert (await record(store.queue, taken)).args == (0,)


@pytest.mark.parametrize("count", [3, 1000])  # 1000: past the Postgres store's COPY threshold
async def test_push_calls_stores_one_job_per_call(store: Subject, count: int) -> None:
    template = job(priority=2, meta={"m": 1})
    ids = await store.queue.push_calls(template, [[i, "x"] for i in range(count)])
    sync_ids = store.queue.push_calls_sync(template, [(i,) for i in range(3)])
    assert len(set(ids + sync_ids)) == count + 3
    first, last = await record(store.queue, ids[0]), await record(store.queue, ids[-1])
    assert (first.args, last.args, first.priority, first.meta, first.state) == (
        (0, "x"), (count - 1, "x"), 2, {"m": 1}, JobState.PENDING)
    assert (await record(store.queue, sync_ids[2])).args == (2,)


async def test_push_on_the_callers_connection_follows_its_transaction(pg_store: Subject) -> None:
    """Postgres only: the in-memory store has no transactions (it refuses a connection,
    see the next test)."""
    queue = pg_store.queue
    async with pg_store.app.store.connection() as conn:
        async with conn.transaction():
            [kept] = await queue.push([job(1)], conn)
            [kept_calls] = await queue.push_calls(job(), [[2]], conn)
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                [dropped] = await queue.push([job(3)], conn)
                raise ZeroDivisionError
    with pg_store.app.store.connection_sync() as conn:
        with conn.transaction():
            [kept_sync] = queue.push_sync([job(4)], conn)
    assert {(await record(queue, i)).args for i in (kept, kept_calls, kept_sync)} == {(1,), (2,), (4,)}
    assert await queue.get(dropped) is None


async def test_push_on_a_connection_is_refused_without_transactions(memory_store: Subject) -> None:
    """The in-memory store: nothing to join, so a connection is a caller's mistake."""
    for push in (memory_store.queue.push_sync, memory_store.queue.push):
        with pytest.raises(TypeError, match="no transactions"):
            result = push([job()], object())
            if asyncio.iscoroutine(result):
                await result


# --- unique keys -----------------------------------------------------------------------------------
async def test_unique_key_of_a_live_job_wins_and_a_finished_one_frees_it(store: Subject) -> None:
    ids = await one_job_in_every_state(store.queue, unique=True)
    again = {state: (await store.queue.push([job(9, unique_key=f"key-{state.value}")]))[0] for state in ids}
    assert {s for s in again if again[s] == ids[s]} == set(LIVE_STATES)
    for state in FINISHED_STATES:
        fresh = await record(store.queue, again[state])
        assert (fresh.state, fresh.args) == (JobState.PENDING, (9,)), state
        assert (await record(store.queue, ids[state])).state is state


async def test_unique_key_twice_in_one_batch_stores_one_job(store: Subject) -> None:
    first, second, other = await store.queue.push([job(1, unique_key="k"), job(2, unique_key="k"), job(3)])
    assert first == second != other
    assert (await record(store.queue, first)).args == (1,)
    assert store.queue.push_sync([job(4, unique_key="k")]) == [first]


async def test_unique_key_is_one_across_queues(store: Subject) -> None:
    """Every queue's jobs share one key space, as they share the Postgres jobs table."""
    [held] = await store.queue.push([job(1, unique_key="k")])
    assert await store.other.push([job(2, queue="other", unique_key="k")]) == [held]


# --- reading and waiting ------------------------------------------------------------------------
async def test_get_of_an_unknown_job_is_none(store: Subject) -> None:
    assert await store.queue.get(uuid.uuid4()) is None
    assert store.queue.get_sync(uuid.uuid4()) is None
    job_id = await push_one(store.queue)
    assert store.queue.get_sync(job_id) == await store.queue.get(job_id)


async def test_any_queue_of_the_store_reads_and_changes_any_job(store: Subject) -> None:
    """A job is found by id whatever queue object is asked (an app's reference by id
    names the default queue), as every Postgres queue reads the one jobs table."""
    job_id = (await store.other.push([job(queue="other")]))[0]
    assert (await record(store.queue, job_id)).queue == "other"
    assert await store.queue.cancel(job_id)
    assert await store.queue.requeue(job_id)
    claimed = await claim_one(store.other)
    await store.other.write_back(WORKER, [outcome(claimed, JobState.SUCCEEDED, result_json="1")])
    assert (await store.queue.wait(job_id, 5)).result == 1


async def test_wait_returns_a_finished_job_at_once_and_refuses_an_unknown_one(store: Subject) -> None:
    job_id = await push_one(store.queue)
    assert await store.queue.cancel(job_id)
    assert (await store.queue.wait(job_id, 0.01)).state is JobState.CANCELLED
    assert store.queue.wait_sync(job_id, 0.01).state is JobState.CANCELLED
    with pytest.raises(KeyError):
        await store.queue.wait(uuid.uuid4(), 1)
    with pytest.raises(KeyError):
        store.queue.wait_sync(uuid.uuid4(), 1)


async def test_wait_times_out_on_a_live_job(store: Subject) -> None:
    job_id = await push_one(store.queue)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await store.queue.wait(job_id, 0.3)
    with pytest.raises(TimeoutError):
        store.queue.wait_sync(job_id, 0.3)
    assert 0.6 <= time.monotonic() - started < 5


async def test_wait_wakes_when_the_job_finishes(store: Subject) -> None:
    """Woken by the finish, not by a re-read (the Postgres waiter re-reads every 10 s)."""
    first, second = await store.queue.push([job(1), job(2)])
    waiting = asyncio.ensure_future(store.queue.wait(first, 30))
    waiting_sync = asyncio.ensure_future(asyncio.to_thread(store.queue.wait_sync, second, 30))
    await asyncio.sleep(0.5)  # both listening
    claimed = await store.queue.claim(WORKER, 2)
    started = time.monotonic()
    await store.queue.write_back(WORKER, [outcome(claimed[0], JobState.SUCCEEDED, result_json='"done"')])
    assert await store.queue.cancel(second)
    finished = await asyncio.wait_for(asyncio.gather(waiting, waiting_sync), 5)
    assert [(r.state, r.result) for r in finished] == [(JobState.SUCCEEDED, "done"), (JobState.CANCELLED, None)]
    assert time.monotonic() - started < 5


# --- cancelling and requeueing -----------------------------------------------------------------
async def test_cancel_takes_every_live_state_and_no_finished_one(store: Subject) -> None:
    ids = await one_job_in_every_state(store.queue)
    before = {state: await record(store.queue, job_id) for state, job_id in ids.items()}
    answers = {state: await store.queue.cancel(job_id) for state, job_id in ids.items()}
    assert {s for s, cancelled in answers.items() if cancelled} == set(LIVE_STATES)
    for state, job_id in ids.items():
        after = await record(store.queue, job_id)
        if state in LIVE_STATES:
            assert after.state is JobState.CANCELLED and after.completed_at is not None, state
            assert after.attempts == before[state].attempts, state
        else:
            assert after == before[state], state
    assert await store.queue.cancel(uuid.uuid4()) is False
    assert store.queue.cancel_sync(ids[JobState.PENDING]) is False


async def test_cancel_sync(store: Subject) -> None:
    job_id = await push_one(store.queue)
    assert store.queue.cancel_sync(job_id) is True
    assert (await record(store.queue, job_id)).state is JobState.CANCELLED


async def test_requeue_takes_failed_cancelled_and_expired_jobs(store: Subject) -> None:
    ids = await one_job_in_every_state(store.queue)
    before = {state: await record(store.queue, job_id) for state, job_id in ids.items()}
    requeuable = {JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
    answers = {state: await store.queue.requeue(job_id) for state, job_id in ids.items()}
    assert {s for s, requeued in answers.items() if requeued} == requeuable
    for state, job_id in ids.items():
        after = await record(store.queue, job_id)
        if state not in requeuable:
            assert after == before[state], state
            continue
        was = before[state]
        assert (after.state, after.completed_at, after.taken_by) == (JobState.PENDING, None, None), state
        assert (after.attempts, after.errors) == (was.attempts, was.errors), state
        assert after.max_attempts == max(was.max_attempts, was.attempts + 1), state
        assert after.scheduled_at >= was.scheduled_at - CLOCK_SLACK, state
    assert await store.queue.requeue(uuid.uuid4()) is False
    # A requeued failure runs again: one more attempt than it had. A requeued expired job
    # keeps its expiry: its next claim finds it expired again.
    claimed = await store.queue.claim(WORKER, 10)
    assert {r.id for r in claimed} == {ids[JobState.PENDING], ids[JobState.FAILED], ids[JobState.CANCELLED]}
    assert (await record(store.queue, ids[JobState.EXPIRED])).state is JobState.EXPIRED
    failed = next(r for r in claimed if r.id == ids[JobState.FAILED])
    assert (failed.attempts, failed.max_attempts) == (2, 2)


async def test_requeue_is_refused_while_another_live_job_holds_the_unique_key(store: Subject) -> None:
    """The key's live holder wins, as at a push: the finished job stays as it is (two
    live holders of one key would break the key's promise)."""
    [first] = await store.queue.push([job(1, unique_key="k")])
    assert await store.queue.cancel(first)
    [holder] = await store.queue.push([job(2, unique_key="k")])
    was = await record(store.queue, first)
    assert await store.queue.requeue(first) is False
    assert await record(store.queue, first) == was
    assert (await record(store.queue, holder)).state is JobState.PENDING
    assert await store.queue.cancel(holder)
    assert await store.queue.requeue(first) is True  # the key is free again


async def test_requeue_sync(store: Subject) -> None:
    job_id = await push_one(store.queue)
    assert store.queue.requeue_sync(job_id) is False
    assert await store.queue.cancel(job_id)
    assert store.queue.requeue_sync(job_id) is True
    assert (await record(store.queue, job_id)).state is JobState.PENDING


# --- claiming ------------------------------------------------------------------------------------
async def test_claim_takes_the_best_priority_then_the_oldest(store: Subject) -> None:
    ids = await store.queue.push([job(0, priority=0), job(1, priority=5), job(2, priority=0), job(3, priority=-1),
                                  job(4, priority=5)])
    claimed = await store.queue.claim(WORKER, 3)
    assert [r.id for r in claimed] == [ids[1], ids[4], ids[0]]
    assert {(r.state, r.taken_by, r.attempts) for r in claimed} == {(JobState.RUNNING, WORKER, 1)}
    assert all(r.started_at is not None for r in claimed)
    assert claimed == [await record(store.queue, r.id) for r in claimed]
    assert [r.id for r in await store.queue.claim("worker-2", 10)] == [ids[2], ids[3]]
    assert await store.queue.claim(WORKER, 10) == []


async def test_claim_takes_due_scheduled_jobs_in_the_same_order(store: Subject) -> None:
    later = await push_one(store.queue, scheduled_at=now() + timedelta(hours=1))
    soon_low, soon_high = await store.queue.push([job(1, scheduled_at=now() + timedelta(seconds=0.5)),
                                                  job(2, priority=3, scheduled_at=now() + timedelta(seconds=0.5))])
    pending = await push_one(store.queue, priority=1)
    assert [r.id for r in await store.queue.claim(WORKER, 10)] == [pending]
    await asyncio.sleep(0.7)
    newer = await push_one(store.queue, priority=1)
    assert [r.id for r in await store.queue.claim(WORKER, 10)] == [soon_high, newer, soon_low]
    assert (await record(store.queue, later)).state is JobState.SCHEDULED


async def test_claim_ranks_the_earliest_due_scheduled_jobs_with_the_best_pending_ones(store: Subject) -> None:
    """The candidates of a claim of ``limit``: the best ``limit`` pending jobs and the
    ``limit`` scheduled or retrying ones due the earliest (the Postgres claim reads each
    through its own index: best by priority, due by time); the best of those first. A
    due job of high priority waits behind one of low priority that was due before it."""
    early, late = await store.queue.push([job(1, scheduled_at=now() + timedelta(seconds=0.3)),
                                          job(2, priority=5, scheduled_at=now() + timedelta(seconds=0.5))])
    pending = await push_one(store.queue, priority=1)
    await asyncio.sleep(0.7)
    assert [[r.id for r in await store.queue.claim(WORKER, 1)] for _ in range(4)] == [[pending], [early], [late], []]


async def test_claim_takes_only_its_queue(store: Subject) -> None:
    mine = await push_one(store.queue)
    theirs = (await store.other.push([job(queue="other")]))[0]
    assert [r.id for r in await store.queue.claim(WORKER, 10)] == [mine]
    assert [r.id for r in await store.other.claim(WORKER, 10)] == [theirs]


async def test_concurrent_claims_never_share_a_job(store: Subject) -> None:
    ids = await store.queue.push([job(i) for i in range(40)])
    batches = await asyncio.gather(*(store.queue.claim(f"worker-{n}", 7) for n in range(8)))
    taken = [r.id for batch in batches for r in batch]
    assert sorted(taken) == sorted(ids)
    assert all(r.taken_by == f"worker-{n}" for n, batch in enumerate(batches) for r in batch)


async def test_expired_jobs_finish_expired_at_their_claim(store: Subject) -> None:
    expired = await push_one(store.queue, priority=9, expires_at=now() - timedelta(seconds=1))
    live = await push_one(store.queue, expires_at=now() + timedelta(hours=1))
    waiting = asyncio.ensure_future(store.queue.wait(expired, 10))
    await asyncio.sleep(0.3)
    taken = [r.id for r in await store.queue.claim(WORKER, 10)]
    assert taken == [live]
    gone = await asyncio.wait_for(waiting, 5)
    assert (gone.state, gone.attempts, gone.errors) == (JobState.EXPIRED, 0, [])
    assert gone.completed_at is not None
    assert await store.queue.claim(WORKER, 10) == []


async def test_an_expired_job_takes_no_slot_of_the_claim(store: Subject) -> None:
    """A claim of ``limit`` jobs returns that many while runnable ones remain, whatever
    expired on the way: a worker reads a short claim as a drained queue and sleeps its
    polling interval, so each expired job ahead of live ones cost up to a second."""
    expired = await store.queue.push([job(i, priority=9, expires_at=now() - timedelta(seconds=1)) for i in range(5)])
    live = [await push_one(store.queue) for _ in range(3)]
    assert [r.id for r in await store.queue.claim(WORKER, 2)] == live[:2]
    assert {(await record(store.queue, job_id)).state for job_id in expired} == {JobState.EXPIRED}


async def test_an_expired_job_takes_no_slot_of_a_write_back_and_claim(store: Subject) -> None:
    first = await push_one(store.queue)
    claimed = await claim_one(store.queue)
    assert claimed.id == first
    await store.queue.push([job(i, priority=9, expires_at=now() - timedelta(seconds=1)) for i in range(3)])
    live = await push_one(store.queue)
    again = await store.queue.write_back_and_claim(WORKER, [outcome(claimed, JobState.SUCCEEDED)], 1)
    assert [r.id for r in again] == [live]
    assert (await record(store.queue, first)).state is JobState.SUCCEEDED


async def test_an_expired_job_takes_no_start_of_a_prefetching_claim(pg_store: Subject) -> None:
    """Postgres only (the in-memory store starts every job it claims): of a claim that
    starts the best ``start`` jobs, expired rows finished on the way take none of them."""
    await pg_store.queue.push([job(i, priority=9, expires_at=now() - timedelta(seconds=1)) for i in range(2)])
    live = [await push_one(pg_store.queue) for _ in range(3)]
    claimed = await pg_store.queue.claim(WORKER, 3, start=1)
    assert [r.id for r in claimed] == live
    assert [r.started_at is not None for r in claimed] == [True, False, False]


async def test_claim_ignores_start_without_release(memory_store: Subject) -> None:
    """The in-memory store's claims cannot lose their answer, so it has nothing to
    release (``release_unknown`` returns ``[]``) and starts every job it hands out: no
    prefetch (the contract lets such a store ignore ``start``)."""
    queue = memory_store.queue
    await queue.push([job(i) for i in range(3)])
    claimed = await queue.claim(WORKER, 3, start=1)
    assert all(r.started_at is not None for r in claimed)
    assert await queue.release_unknown(WORKER, [], previous_life=True) == []
    assert [(await record(queue, r.id)).state for r in claimed] == [JobState.RUNNING] * 3


async def test_claim_starts_only_the_best_start_of_its_jobs(pg_store: Subject) -> None:
    """Postgres only: a store that can hand unstarted jobs back prefetches; the others
    are running but not started until written back (or marked by the worker)."""
    queue = pg_store.queue
    await queue.push([job(i, priority=-i) for i in range(3)])
    claimed = await queue.claim(WORKER, 3, start=1)
    assert [r.args for r in claimed] == [(0,), (1,), (2,)]
    assert [r.started_at is not None for r in claimed] == [True, False, False]
    assert {(r.state, r.attempts) for r in claimed} == {(JobState.RUNNING, 1)}
    await queue.write_back(WORKER, [outcome(claimed[1], JobState.SUCCEEDED)])
    assert (await record(queue, claimed[1].id)).started_at is not None
    await queue.push([job(i) for i in range(4)])
    assert [r.started_at is None for r in await queue.claim(WORKER, 2, start=0)] == [True, True]
    assert [r.started_at is None for r in await queue.claim(WORKER, 2, start=None)] == [False, False]


# --- per-key concurrency ---------------------------------------------------------------------------
def keyed(i: int, key: str, concurrency: int = 1, **options: object) -> Job:
    return job(i, concurrency_key=key, concurrency=concurrency, **options)


async def test_keyed_push_stores_the_key_and_its_limit(store: Subject) -> None:
    one, two, plain = await store.queue.push([keyed(1, "cust-1"), keyed(2, "cust-2", 3), job(3)])
    assert [((r := await record(store.queue, i)).concurrency_key, r.concurrency) for i in (one, two, plain)] == [
        ("cust-1", 1), ("cust-2", 3), (None, None)]


async def test_keyed_claim_takes_one_place_per_key_and_passes_busy_keys_over(store: Subject) -> None:
    """A busy key's backlog ahead blocks neither other keys nor unkeyed jobs, and a claim
    of ``limit`` returns that many while that many are claimable (a short claim makes a
    worker sleep its polling interval)."""
    busy = await store.queue.push([keyed(i, "busy", priority=9) for i in range(20)])
    assert [r.id for r in await store.queue.claim(WORKER, 1)] == busy[:1]
    others = await store.queue.push([keyed(100 + i, f"k{i}") for i in range(5)] + [job(200), job(201)])
    claimed = await store.queue.claim(WORKER, 7)
    assert [r.id for r in claimed] == others
    assert await store.queue.claim(WORKER, 7) == []
    assert {((r := await record(store.queue, i)).state, r.attempts) for i in busy[1:]} == {(JobState.PENDING, 0)}


async def test_keyed_claim_fills_its_places_past_a_crowded_key(store: Subject) -> None:
    """A free key's many jobs ahead take one place each of their limit, the rest of the
    claim goes to the jobs behind them."""
    crowded = await store.queue.push([keyed(i, "crowded", 2, priority=5) for i in range(10)])
    behind = await store.queue.push([keyed(100 + i, f"k{i}") for i in range(4)])
    claimed = await store.queue.claim(WORKER, 6)
    assert [r.id for r in claimed] == crowded[:2] + behind


async def test_keyed_limit_counts_every_worker_and_frees_a_place_per_finished_job(store: Subject) -> None:
    await store.queue.push([keyed(i, "k", 2) for i in range(6)])
    first = await store.queue.claim("worker-a", 1)
    second = await store.queue.claim("worker-b", 5)
    assert len(first) == len(second) == 1
    assert await store.queue.claim("worker-c", 5) == []
    await store.queue.write_back("worker-a", [outcome(first[0], JobState.SUCCEEDED)])
    assert [r.args for r in await store.queue.claim("worker-c", 5)] == [(2,)]
    await store.queue.write_back("worker-b", [outcome(second[0], JobState.FAILED, error=failure())])
    assert [r.args for r in await store.queue.write_back_and_claim("worker-c", [], 5)] == [(3,)]


async def test_keyed_cancel_and_retry_free_their_place(store: Subject) -> None:
    await store.queue.push([keyed(1, "k", max_attempts=2), keyed(2, "k")])
    running = await claim_one(store.queue)
    assert await store.queue.claim(WORKER, 5) == []
    await store.queue.write_back(WORKER, [outcome(running, JobState.RETRYING, delay=3600)])
    second = await claim_one(store.queue)
    assert second.args == (2,)
    assert await store.queue.cancel(second.id)
    await store.queue.push([keyed(3, "k")])
    assert [r.args for r in await store.queue.claim(WORKER, 5)] == [(3,)]


async def test_keyed_write_back_and_claim_frees_then_takes_the_place(store: Subject) -> None:
    await store.queue.push([keyed(1, "k"), keyed(2, "k")])
    first = await claim_one(store.queue)
    assert await store.queue.write_back_and_claim(WORKER, [], 5) == []
    again = await store.queue.write_back_and_claim(WORKER, [outcome(first, JobState.SUCCEEDED)], 5)
    assert [r.args for r in again] == [(2,)]
    assert (await record(store.queue, first.id)).state is JobState.SUCCEEDED


async def test_keyed_limit_is_per_queue(store: Subject) -> None:
    await store.queue.push([keyed(1, "k"), keyed(2, "k")])
    await store.other.push([keyed(3, "k", queue="other")])
    assert [r.args for r in await store.queue.claim(WORKER, 5)] == [(1,)]
    assert [r.args for r in await store.other.claim(WORKER, 5)] == [(3,)]


async def test_keyed_due_jobs_obey_the_limit(store: Subject) -> None:
    await store.queue.push([keyed(1, "k"), keyed(2, "k", scheduled_at=now() - timedelta(seconds=1))])
    assert len(await store.queue.claim(WORKER, 5)) == 1
    assert await store.queue.claim(WORKER, 5) == []


async def test_keyed_expired_jobs_finish_and_take_no_place(store: Subject) -> None:
    gone = await store.queue.push([keyed(i, "k", priority=9, expires_at=now() - timedelta(seconds=1))
                                   for i in range(3)])
    live = await store.queue.push([keyed(10, "k"), keyed(11, "k"), keyed(12, "j")])
    assert [r.id for r in await store.queue.claim(WORKER, 5)] == [live[0], live[2]]
    assert {(await record(store.queue, i)).state for i in gone} == {JobState.EXPIRED}


async def test_keyed_prefetching_claim_starts_only_the_best_start(pg_store: Subject) -> None:
    """Postgres only (the in-memory store starts every job it claims)."""
    await pg_store.queue.push([keyed(i, f"k{i}", priority=-i) for i in range(3)] + [keyed(9, "k0")])
    claimed = await pg_store.queue.claim(WORKER, 4, start=1)
    assert [r.args for r in claimed] == [(0,), (1,), (2,)]
    assert [r.started_at is not None for r in claimed] == [True, False, False]


async def test_keyed_claims_go_keyed_only_while_keyed_jobs_wait(pg_store: Subject) -> None:
    """Postgres only (the in-memory store has one claim): a queue's claims take the keyed
    path while it has keyed jobs waiting, as each claim reports, and the plain one, today's
    statement, again once none wait."""
    queue, keyed_queues = pg_store.queue, pg_store.app.store.jobs.keyed_queues
    await queue.push([job(1), keyed(2, "k"), keyed(3, "k")])
    assert [r.args for r in await queue.claim(WORKER, 1)] == [(1,)]
    assert "default" in keyed_queues  # the plain claim's rows said so
    [second] = await queue.claim(WORKER, 5)
    assert second.args == (2,) and "default" in keyed_queues  # (3,) waits for its key
    assert await queue.claim(WORKER, 5) == []  # a keyed claim of none says so too
    assert "default" in keyed_queues
    [third] = await queue.write_back_and_claim(WORKER, [outcome(second, JobState.SUCCEEDED)], 5)
    assert third.args == (3,) and "default" not in keyed_queues  # nothing keyed left waiting
    await queue.push([job(4)])
    assert [r.args for r in await queue.claim(WORKER, 5)] == [(4,)]
    assert "default" not in keyed_queues


async def test_keyed_claims_driven_synchronously_keep_the_limit(pg_store: Subject, dsn: str) -> None:
    """Postgres only: the Celery transport's consumer drives the same claim steps on a sync
    connection, alone or in its transaction with acknowledgements; the lock and the claim
    are one transaction either way (released after: the next claim sees the first's)."""
    from chancy.store.pg.jobs import claim_steps
    from chancy.store.pg.statements import drive_sync

    await pg_store.queue.push([keyed(i, f"k{i % 2}") for i in range(6)])
    statements = pg_store.app.store.jobs

    def claim(conn: psycopg.Connection, in_transaction: bool) -> list:
        steps = claim_steps(statements, "default", "celery:consumer", 10)
        if not in_transaction:
            return drive_sync(conn, steps)
        with conn.transaction():
            return drive_sync(conn, steps)

    with psycopg.connect(dsn, autocommit=True) as conn:
        statements.keyed_queues.add("default")
        assert sorted(r.concurrency_key for r in await asyncio.to_thread(claim, conn, False)) == ["k0", "k1"]
        assert await asyncio.to_thread(claim, conn, True) == []
        locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert locks.fetchone() == (0,)


async def test_keyed_claims_at_the_same_instant_never_share_a_place(pg_store: Subject) -> None:
    """Postgres only (memory claims run under one lock): many claims of one queue at
    once, on separate connections, start at most one job of a key with limit 1."""
    queue = pg_store.queue
    for round_ in range(5):
        await queue.push([keyed(i, f"r{round_}-k{i % 3}") for i in range(30)])
        results = await asyncio.gather(*(queue.claim(f"worker-{n}", 10) for n in range(8)))
        keys = sorted(r.concurrency_key for claimed in results for r in claimed)
        assert keys == [f"r{round_}-k{k}" for k in range(3)]


async def test_keyed_claim_reads_past_a_full_keys_backlog(store: Subject) -> None:
    """A full key's backlog many times the claim's size ahead (Postgres: it fills the read
    of the queue's front, so the claim goes key by key): the claim still returns exactly
    what can start, best first, and the backlog waits untouched."""
    busy = await store.queue.push([keyed(i, "busy", priority=9) for i in range(300)])
    assert [r.id for r in await store.queue.claim(WORKER, 1)] == busy[:1]
    others = await store.queue.push([keyed(1000 + i, f"k{i}", 2, priority=i % 3) for i in range(6)]
                                    + [job(2000, priority=5), job(2001)])
    claimed = await store.queue.claim(WORKER, 10)
    assert sorted(r.id for r in claimed) == sorted(others)
    assert [r.id for r in sorted(claimed, key=lambda r: (-r.priority, r.id))] == [
        others[6], others[2], others[5], others[1], others[4], others[0], others[3], others[7]]
    assert await store.queue.claim(WORKER, 10) == []
    assert {((r := await record(store.queue, i)).state, r.attempts) for i in busy[1:]} == {(JobState.PENDING, 0)}


async def test_fair_queue_takes_turns_between_keys(store: Subject) -> None:
    """A fair queue's claim takes each key's best job (unkeyed jobs are one more key)
    before a second job of any key; a key's own order, and its limit, still hold."""
    fair = store.app.queues["fair"]
    burst = await fair.push([keyed(i, "a", 10, queue="fair") for i in range(50)])
    b = await fair.push([keyed(100 + i, "b", 10, queue="fair") for i in range(2)])
    c = await fair.push([keyed(200, "c", 1, queue="fair"), keyed(201, "c", 1, queue="fair")])
    plain = await fair.push([job(300, queue="fair"), job(301, queue="fair")])
    claimed = await fair.claim(WORKER, 6)
    assert {r.id for r in claimed} == {burst[0], b[0], c[0], plain[0], burst[1], b[1]}
    assert {r.id for r in await fair.claim(WORKER, 3)} == {plain[1], burst[2], burst[3]}


async def test_fair_queue_takes_a_later_keys_job_ahead_of_a_burst(store: Subject) -> None:
    """The point of fairness: another key's one job, pushed behind a burst of a free key,
    is in the next claim; without fairness it waits for the burst."""
    for queue in (store.queue, store.app.queues["fair"]):
        burst = await queue.push([keyed(i, "tenant-a", 1000, queue=queue.name) for i in range(100)])
        [late] = await queue.push([keyed(999, "tenant-b", queue=queue.name)])
        claimed = {r.id for r in await queue.claim(WORKER, 10)}
        assert (late in claimed) is queue.fair_keys and len(claimed) == 10 and burst[0] in claimed


# --- writing back ----------------------------------------------------------------------------------
async def test_write_back_finishes_with_result_and_error(store: Subject) -> None:
    await store.queue.push([job(1), job(2)])
    ok, bad = await store.queue.claim(WORKER, 2)
    before = now()
    await store.queue.write_back(WORKER, [outcome(ok, JobState.SUCCEEDED, result_json='{"n": [1, 2]}'),
                                          outcome(bad, JobState.FAILED, error=failure("no"))])
    ok, bad = await record(store.queue, ok.id), await record(store.queue, bad.id)
    assert (ok.state, ok.result, ok.errors, ok.attempts) == (JobState.SUCCEEDED, {"n": [1, 2]}, [], 1)
    assert (bad.state, bad.result, bad.attempts) == (JobState.FAILED, None, 1)
    assert bad.errors == [{**failure("no"), "attempt": 1}]
    assert all(before - CLOCK_SLACK <= r.completed_at <= now() + CLOCK_SLACK for r in (ok, bad))
    assert (ok.taken_by, bad.taken_by) == (WORKER, WORKER)


async def test_write_back_changes_only_the_claimers_running_rows(store: Subject) -> None:
    await store.queue.push([job(1), job(2)])
    mine, cancelled = await store.queue.claim(WORKER, 2)
    await store.queue.write_back("worker-2", [outcome(mine, JobState.SUCCEEDED, result_json="1")])
    assert await record(store.queue, mine.id) == mine
    assert await store.queue.cancel(cancelled.id)
    was = await record(store.queue, cancelled.id)
    await store.queue.write_back(WORKER, [outcome(cancelled, JobState.SUCCEEDED, result_json="1")])
    assert await record(store.queue, cancelled.id) == was


async def test_write_back_late_or_twice_changes_nothing(store: Subject) -> None:
    await push_one(store.queue, max_attempts=3)
    first = await claim_one(store.queue)
    await store.queue.write_back(WORKER, [outcome(first, JobState.RETRYING, delay=0, error=failure("1"))])
    second = await claim_one(store.queue)
    assert second.attempts == 2
    await store.queue.write_back(WORKER, [outcome(first, JobState.FAILED, error=failure("stale"))])
    assert await record(store.queue, second.id) == second  # attempt 1's outcome is stale
    await store.queue.write_back(WORKER, [outcome(second, JobState.SUCCEEDED, result_json="2")])
    done = await record(store.queue, second.id)
    await store.queue.write_back(WORKER, [outcome(second, JobState.FAILED, error=failure("again"))])
    assert await record(store.queue, second.id) == done
    assert (done.state, done.result, [e["message"] for e in done.errors]) == (JobState.SUCCEEDED, 2, ["1"])


async def test_write_back_retry_waits_its_delay_and_counts_attempts(store: Subject) -> None:
    await push_one(store.queue, max_attempts=2)
    claimed = await claim_one(store.queue)
    await store.queue.write_back(WORKER, [outcome(claimed, JobState.RETRYING, delay=1.0, error=failure("first"),
                                                  max_attempts=3)])
    waiting = await record(store.queue, claimed.id)
    assert (waiting.state, waiting.completed_at, waiting.attempts, waiting.max_attempts) == (
        JobState.RETRYING, None, 1, 3)
    assert timedelta(seconds=0.5) <= waiting.scheduled_at - claimed.started_at <= timedelta(seconds=1) + CLOCK_SLACK
    assert await store.queue.claim(WORKER, 10) == []
    await asyncio.sleep(max(0.0, (waiting.scheduled_at - now()).total_seconds()) + 0.3)
    again = await claim_one(store.queue)
    assert (again.id, again.state, again.attempts) == (claimed.id, JobState.RUNNING, 2)
    await store.queue.write_back(WORKER, [outcome(again, JobState.FAILED, error=failure("second"))])
    failed = await record(store.queue, claimed.id)
    assert [(e["message"], e["attempt"]) for e in failed.errors] == [("first", 1), ("second", 2)]
    assert (failed.state, failed.attempts, failed.max_attempts) == (JobState.FAILED, 2, 3)


async def test_write_back_without_attempt_applies_to_the_current_one(store: Subject) -> None:
    await push_one(store.queue)
    claimed = await claim_one(store.queue)
    await store.queue.write_back(WORKER, [Transition(claimed.id, JobState.CANCELLED)])
    assert (await record(store.queue, claimed.id)).state is JobState.CANCELLED


async def test_write_back_and_claim_writes_first_then_claims(store: Subject) -> None:
    await store.queue.push([job(1), job(2, priority=-1)])
    first = await claim_one(store.queue)
    claimed = await store.queue.write_back_and_claim(
        WORKER, [outcome(first, JobState.SUCCEEDED, result_json="1")], 5)
    assert [r.args for r in claimed] == [(2,)]
    assert (await record(store.queue, first.id)).state is JobState.SUCCEEDED
    assert await store.queue.write_back_and_claim(WORKER, [], 5) == []


# --- handing back unknown claims ---------------------------------------------------------------
async def test_release_unknown_hands_back_what_the_worker_never_heard_of(pg_store: Subject) -> None:
    """Postgres only: its claim's answer can be lost on the way (the in-memory store's
    cannot: see ``test_claim_ignores_start_without_release``)."""
    queue = pg_store.queue
    await queue.push([job(i, max_attempts=2) for i in range(4)])
    known, started, prefetched, lost = await queue.claim(WORKER, 4, start=2)
    released = await queue.release_unknown(WORKER, [known.id])
    assert sorted(released) == sorted([started.id, prefetched.id, lost.id])
    for job_id in released:
        back = await record(queue, job_id)
        assert (back.state, back.attempts, back.taken_by, back.started_at, back.errors) == (
            JobState.PENDING, 0, None, None, []), job_id
    assert await record(queue, known.id) == known


async def test_release_unknown_after_a_restart_counts_started_attempts(pg_store: Subject) -> None:
    """Postgres only (see above): a previous life's started job lost its attempt (worker
    lost), its prefetched one never started (refunded)."""
    queue = pg_store.queue
    await queue.push([job(1, max_attempts=2), job(2, max_attempts=1), job(3)])
    retried, failed, prefetched = await queue.claim(WORKER, 3, start=2)
    assert sorted(await queue.release_unknown(WORKER, [], previous_life=True)) == sorted(
        [retried.id, failed.id, prefetched.id])
    retried, failed, prefetched = [await record(queue, r.id) for r in (retried, failed, prefetched)]
    assert (retried.state, retried.attempts, failed.state, failed.attempts) == (
        JobState.RETRYING, 1, JobState.FAILED, 1)
    assert [e["type"] for e in retried.errors + failed.errors] == ["chancy.WorkerLost"] * 2
    assert (prefetched.state, prefetched.attempts, prefetched.errors) == (JobState.PENDING, 0, [])


# --- the rate gate ---------------------------------------------------------------------------------
async def test_gate_admits_the_free_starts_and_spaces_the_rest(store: Subject) -> None:
    limit = {TASK: RateLimit(2, 60)}
    await store.queue.push([job(i) for i in range(5)])
    claimed = await store.queue.claim(WORKER, 10)
    verdict = await store.queue.gate(WORKER, claimed, limit)
    assert verdict.admitted == {claimed[0].id, claimed[1].id} and verdict.next_due == pytest.approx(60)
    admitted = [await record(store.queue, r.id) for r in claimed[:2]]
    assert {(r.state, r.attempts, r.taken_by) for r in admitted} == {(JobState.RUNNING, 1, WORKER)}
    started = admitted[0].started_at
    assert admitted[1].started_at == started
    deferred = [await record(store.queue, r.id) for r in claimed[2:]]
    assert {(r.state, r.attempts, r.taken_by, r.started_at) for r in deferred} == {
        (JobState.SCHEDULED, 0, None, None)}
    # The first round waits a period; each new job after it joins the line period/count apart.
    assert [(r.scheduled_at - started).total_seconds() for r in deferred] == pytest.approx([60, 90, 120])
    # A job pushed later in the same window goes to the end of the line.
    await push_one(store.queue)
    [late] = await store.queue.claim(WORKER, 10)
    verdict = await store.queue.gate(WORKER, [late], limit)
    assert verdict.admitted == frozenset()
    late = await record(store.queue, late.id)
    assert (late.scheduled_at - started).total_seconds() == pytest.approx(150)
    assert verdict.next_due == pytest.approx((late.scheduled_at - now()).total_seconds(), abs=2)


async def test_gate_serves_jobs_that_waited_first_and_refunds_retries(store: Subject) -> None:
    limit = {TASK: RateLimit(1, 60)}
    await push_one(store.queue, max_attempts=2, priority=-5)
    retried = await claim_one(store.queue)
    await store.queue.write_back(WORKER, [outcome(retried, JobState.RETRYING, delay=0)])
    await store.queue.push([job(1, priority=5), job(2, priority=5)])
    claimed = await store.queue.claim(WORKER, 10)
    assert [r.args for r in claimed] == [(1,), (2,), (0,)]
    verdict = await store.queue.gate(WORKER, claimed, limit)
    assert verdict.admitted == {retried.id}  # it waited (its retry was due), the others are new
    back = [await record(store.queue, r.id) for r in claimed[:2]]
    assert {(r.state, r.attempts) for r in back} == {(JobState.SCHEDULED, 0)}
    assert (await record(store.queue, retried.id)).attempts == 2


async def test_gate_hands_a_retry_back_retrying_with_its_attempt_refunded(store: Subject) -> None:
    await store.queue.push([job(i, max_attempts=3) for i in range(2)])
    first = await store.queue.claim(WORKER, 2)
    await store.queue.write_back(WORKER, [outcome(r, JobState.RETRYING, delay=0, error=failure()) for r in first])
    retries = await store.queue.claim(WORKER, 2)
    assert [r.attempts for r in retries] == [2, 2]
    verdict = await store.queue.gate(WORKER, retries, {TASK: RateLimit(1, 60)})
    assert verdict.admitted == {retries[0].id}
    back = await record(store.queue, retries[1].id)
    assert (back.state, back.attempts, back.taken_by, len(back.errors)) == (JobState.RETRYING, 1, None, 1)


async def test_gate_leaves_jobs_the_worker_no_longer_holds(store: Subject) -> None:
    await push_one(store.queue)
    claimed = await claim_one(store.queue)
    assert await store.queue.cancel(claimed.id)
    was = await record(store.queue, claimed.id)
    await store.queue.gate(WORKER, [claimed], {TASK: RateLimit(1, 60)})
    assert await record(store.queue, claimed.id) == was


async def test_gate_counts_across_the_queues_of_a_store(store: Subject) -> None:
    """One task's window is shared by every queue (and worker) of the store."""
    limit = {TASK: RateLimit(1, 60)}
    await push_one(store.queue)
    await store.other.push([job(queue="other")])
    first, second = await claim_one(store.queue), await claim_one(store.other, "worker-2")
    assert (await store.queue.gate(WORKER, [first], limit)).admitted == {first.id}
    assert (await store.other.gate("worker-2", [second], limit)).admitted == frozenset()


# --- telling a worker in this process (the in-memory store's watch) -----------------------------
async def test_watchers_hear_of_their_queues_jobs_through_any_queue(memory_store: Subject) -> None:
    """In-memory only: a Postgres worker hears pushes and cancels through LISTEN (its
    store's ``watch`` does nothing). A cancel or requeue through another queue object (an
    app's reference by id names the default queue) reaches the worker of the job's queue."""
    heard: list[object] = []
    unwatch = memory_store.other.watch(lambda: heard.append("pushed"), heard.append)
    [job_id] = await memory_store.other.push([job(queue="other")])
    assert await memory_store.queue.cancel(job_id)
    assert await memory_store.queue.requeue(job_id)
    await memory_store.queue.push([job()])  # not the watched queue's
    await asyncio.sleep(0.05)
    assert heard == ["pushed", job_id, "pushed"]
    unwatch()
    await memory_store.other.push([job(queue="other")])
    await asyncio.sleep(0.05)
    assert heard == ["pushed", job_id, "pushed"]
