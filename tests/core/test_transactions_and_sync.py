"""Pushing inside the caller's transaction, and the synchronous API."""

import threading

import psycopg
import pytest

import core_tasks
from chancy import Job, JobState
from chancy.testing import running_worker


async def _count_jobs(app) -> int:
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM chancy_jobs")
        return (await cur.fetchone())[0]


async def test_async_push_in_rolled_back_transaction_leaves_no_job(app, dsn):
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        refs = await app.push_many([Job(core_tasks.add, args=[1, 2])], connection=conn)
        await conn.rollback()
    assert await app.get_job(refs[0]) is None
    assert await _count_jobs(app) == 0


async def test_async_push_in_committed_transaction_runs(app, dsn):
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        [ref] = await app.push_many([Job(core_tasks.add, args=[1, 2])], connection=conn)
        async with running_worker(app):
            # Not visible to the worker until the caller commits.
            assert await app.get_job(ref) is None
            await conn.commit()
            assert (await ref.wait(timeout=10)).result == 3


def test_sync_push_on_callers_connection(app, dsn):
    with psycopg.Connection.connect(dsn) as conn:
        app.push_many_sync([Job(core_tasks.add, args=[1, 1])], connection=conn)
        conn.rollback()
        [kept] = app.push_many_sync([Job(core_tasks.add, args=[2, 2])], connection=conn)
        conn.commit()
    assert app.get_job_sync(kept).state is JobState.PENDING
    with psycopg.Connection.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM chancy_jobs").fetchone()[0] == 1
    app.close_sync()


def test_wrong_connection_kind_is_refused(app, dsn):
    with psycopg.Connection.connect(dsn) as conn, pytest.raises(TypeError, match="AsyncConnection"):
        import asyncio

        asyncio.run(app.push_many([Job(core_tasks.add, args=[1, 1])], connection=conn))


async def test_sync_api_from_a_thread_without_event_loop(app):
    results = {}

    def caller():
        ref = app.push_sync(core_tasks.add, 20, 22)
        record = ref.wait_sync(timeout=10)
        results["record"] = record
        results["get"] = ref.get_sync()

    async with running_worker(app):
        thread = threading.Thread(target=caller)
        thread.start()
        import asyncio

        await asyncio.to_thread(thread.join, 15)
    assert results["record"].result == 42
    assert results["get"].state is JobState.SUCCEEDED
    app.close_sync()


def test_sync_wait_timeout_and_cancel(app):
    ref = app.push_sync(core_tasks.add, 1, 1)
    with pytest.raises(TimeoutError):
        ref.wait_sync(timeout=0.2)
    assert ref.cancel_sync() is True
    assert ref.wait_sync(timeout=1).state is JobState.CANCELLED
    app.close_sync()
