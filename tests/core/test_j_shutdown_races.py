"""A graceful stop racing the worker's own background writes: nothing it holds is left
``running`` behind it. Each race is made deterministic by holding a row lock in another
connection, so that the worker's statement waits exactly at the racy point."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from chancy import Job, JobState, Queue, Worker, execution
from chancy.testing import eventually

GATE = threading.Event()


def wait_for_gate() -> str:
    """Runs until the test opens the gate."""
    if not GATE.wait(60):
        raise TimeoutError("the test never opened the gate")
    return "done"


@pytest.fixture(autouse=True)
def gate_task_allowed():
    execution.allow_imports([__name__])
    GATE.clear()
    yield
    GATE.set()  # never leave a worker thread waiting


async def _lock_waiters(dsn: str) -> int:
    """Statements of this database waiting for a row lock."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")
        return (await cur.fetchone())[0]


async def _no_lock_waiters(dsn: str) -> bool:
    return await _lock_waiters(dsn) == 0


async def test_stop_waits_for_the_write_back_under_way_instead_of_cancelling_it(make_app, dsn):
    """The flush loop took the outcome and its write waits on the row; the stop's final
    flush found nothing left to write and cancelled that write, so the job stayed
    ``running`` under a worker that had deregistered (seen under load as a held job still
    running after a clean stop)."""
    app = await make_app(Queue("default", concurrency=1, executor="thread", polling_interval=30))
    ref = await app.push(Job(wait_for_gate))
    worker = Worker(app, writeback_delay=0, install_signal_handlers=False, cluster_plugins=False)
    run = asyncio.create_task(worker.start())
    async with await psycopg.AsyncConnection.connect(dsn) as locker:
        try:
            await eventually(lambda: worker.running_jobs == {ref.id}, timeout=30)
            await locker.execute("SELECT 1 FROM chancy_jobs WHERE id = %s FOR UPDATE", [ref.id])
            GATE.set()
            await eventually(lambda: _lock_waiters(dsn), timeout=30, message="the write-back waiting on the row")
            worker.request_stop()
            done, _ = await asyncio.wait({run}, timeout=3)
            assert not done, "the worker stopped while the outcome it held was still being written"
        finally:
            await locker.rollback()
        await asyncio.wait_for(run, 60)
    record = await ref.get()
    assert (record.state, record.result) == (JobState.SUCCEEDED, "done")


#: Makes a worker's statement wait, holding the row, for as long as the test holds
#: advisory lock 4242: the mark of a prefetched job's start (the claim, which also writes
#: starts, is let through), or the claim itself.
HOLD = """
CREATE FUNCTION j_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'running' AND OLD.state = TG_ARGV[0]
       AND (TG_ARGV[0] = 'pending' OR (OLD.started_at IS NULL AND NEW.started_at IS NOT NULL)) THEN
        PERFORM pg_advisory_xact_lock(4242);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER j_hold BEFORE UPDATE ON chancy_jobs FOR EACH ROW EXECUTE FUNCTION j_hold('{held}');
"""


async def _stop_while_held(app, dsn: str, held: str, refs: list) -> list[tuple]:
    """Run a one-slot thread-pool worker until its statement on a ``held`` row waits, stop
    it, check that it does not finish stopping meanwhile, let the statement through;
    then each job's (state, attempts, whether it has no start)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as holder:
        await holder.execute(HOLD.format(held=held))
        await holder.execute("SELECT pg_advisory_lock(4242)")
        worker = Worker(app, prefetch_multiplier=4, install_signal_handlers=False, cluster_plugins=False)
        run = asyncio.create_task(worker.start())
        try:
            await eventually(lambda: _lock_waiters(dsn), timeout=30, message="a statement waiting")
            worker.request_stop()
            done, _ = await asyncio.wait({run}, timeout=3)
            assert not done, "the worker stopped while its statement on a job was under way"
        finally:
            await holder.execute("SELECT pg_advisory_unlock(4242)")
        await asyncio.wait_for(run, 60)
        await eventually(lambda: _no_lock_waiters(dsn), timeout=30, message="the statement done")
        await holder.execute("DROP TRIGGER j_hold ON chancy_jobs")
    return [(r.state, r.attempts, r.started_at is None) for r in [await ref.get() for ref in refs]]


async def test_stop_waits_for_the_mark_of_prefetched_starts_under_way(make_app, dsn):
    """A thread-pool slot frees, so the worker writes the start of the next prefetched job
    before handing it over; a stop while that statement held the row made the hand-back
    skip it (SKIP LOCKED), and once the mark committed the job stayed ``running`` under
    a worker that had stopped, with a start it never had."""
    app = await make_app(Queue("default", concurrency=1, executor="thread", polling_interval=30))
    refs = [await app.push(Job("core_tasks.add", args=[i, i])) for i in range(4)]
    states = await _stop_while_held(app, dsn, "running", refs)
    assert states[0] == (JobState.SUCCEEDED, 1, False)
    assert states[1:] == [(JobState.PENDING, 0, True)] * 3, states


async def test_jobs_whose_claim_was_under_way_at_a_stop_go_back_with_no_start(make_app, dsn):
    """The claim answering after the stop wrote the start of the jobs it would start at
    once; they went back pending, attempt refunded, but still showing that start."""
    app = await make_app(Queue("default", concurrency=1, executor="thread", polling_interval=30))
    refs = [await app.push(Job("core_tasks.add", args=[i, i])) for i in range(4)]
    states = await _stop_while_held(app, dsn, "pending", refs)
    assert states == [(JobState.PENDING, 0, True)] * 4, states
