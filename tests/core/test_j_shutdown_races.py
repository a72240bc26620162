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
