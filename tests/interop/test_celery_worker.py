"""Path 2 and 3: rows consumed by stock ``celery worker`` subprocesses (solo and
prefork) through the chancy transport, results read back through the Celery backend,
and a Celery worker killed mid-task losing nothing."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from celery.result import AsyncResult

from chancy import Chancy
from chancy.job import Job, JobState, Limit
from chancy.queues.pg import Queue
from chancy.testing import eventually

from interop_support import job_rows, ran


@pytest.fixture
async def chancy_app(interop_dsn: str):
    app = Chancy(interop_dsn, plugins=[Queue("celery")])
    yield app
    await app.close()


async def _result(celery_app, task_id, timeout: float = 20.0):
    return await asyncio.to_thread(AsyncResult(str(task_id), app=celery_app).get, timeout=timeout)


@pytest.mark.parametrize("pool", ["solo", "prefork"])
async def test_celery_worker_consumes_chancy_jobs(celery_app, chancy_app, celery_worker, pool):
    worker = celery_worker(pool=pool, concurrency=2)
    ref = await chancy_app.push(Job(
        "interop.describe", args=[1, "two"], kwargs={"three": 3}, queue="celery", priority=4,
        limits=[Limit(Limit.Type.TIME, 30)],
    ))
    seen = await _result(celery_app, ref.id)
    assert seen["args"] == [1, "two"] and seen["kwargs"] == {"three": 3}
    assert seen["id"] == str(ref.id) and seen["root_id"] == str(ref.id) and seen["retries"] == 0
    assert seen["timelimit"] == [30, None] and seen["priority"] == 4 and seen["queue"] == "celery"
    record = await ref.get()
    assert record.state is JobState.SUCCEEDED and record.result == seen, worker.log()
    # The ack may come after the result: in Celery's event loop a solo pool acks a task
    # once it has run (as on Redis), and the ack names the consumer on the finished row.
    for _ in range(100):
        if "acked_by" in record.meta["celery"]:
            break
        await asyncio.sleep(0.1)
        record = await ref.get()
    assert record.meta["celery"]["acked_by"].startswith("celery:"), worker.log()
    assert record.meta["celery"]["state"] == "SUCCESS"


async def test_celery_to_celery_links_chains_retries_and_failures(celery_app, celery_worker):
    from celery import chain, chord, group

    celery_worker(pool="prefork", concurrency=2)
    add = celery_app.tasks["interop.add"]
    linked = add.apply_async((1, 2), link=add.s(10))
    assert await _result(celery_app, linked.id) == 3
    chained = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    assert await _result(celery_app, chained.id) == 10
    retried = celery_app.tasks["interop.retry_twice"].delay()
    assert await _result(celery_app, retried.id) == 2
    failed = celery_app.tasks["interop.fail"].delay("boom")
    with pytest.raises(ValueError, match="boom"):
        await _result(celery_app, failed.id)
    callback_id = linked.children[0].id if linked.children else None
    assert callback_id is not None and await _result(celery_app, callback_id) == 13
    grouped = group(add.s(1, 1), add.s(2, 2)).apply_async()
    assert await asyncio.to_thread(grouped.get, timeout=20) == [2, 4]
    # A chord completes through Celery's chord_unlock task, polling the backend.
    chorded = chord([add.s(1, 1), add.s(2, 2)], celery_app.tasks["interop.total"].s()).apply_async()
    assert await _result(celery_app, chorded.id) == 6


async def test_unregistered_task_is_a_failed_row_with_a_reason(chancy_app, celery_worker):
    celery_worker(pool="solo")
    ref = await chancy_app.push(Job("interop.no_such_task", queue="celery"))
    record = await ref.wait(timeout=20)
    assert record.state is JobState.FAILED
    assert "rejected without requeue by Celery consumer" in record.errors[-1]["message"]


@pytest.mark.parametrize("acks_late", ["1", "0"])
async def test_celery_worker_killed_mid_task_loses_nothing(interop_dsn, celery_app, celery_worker, acks_late):
    """Even with Celery's default early ack: the row stays running under the consumer
    until the result backend stores the outcome."""
    victim = celery_worker(pool="prefork", concurrency=1, INTEROP_ACKS_LATE=acks_late)
    result = celery_app.tasks["interop.record"].delay(7, 60)
    job_id = uuid.UUID(result.id)
    await eventually(lambda: job_rows(interop_dsn, f"id = '{job_id}' AND state = 'running'"), timeout=20,
                     message="the task is running in the Celery worker")
    victim.kill()
    assert ran(interop_dsn) == []
    with psycopg.connect(interop_dsn, autocommit=True) as conn:  # let the re-run finish at once
        conn.execute("UPDATE chancy_jobs SET args = '[7, 0]' WHERE id = %s", (job_id,))
    # A new Celery worker recovers the dead consumer's row and runs it again.
    celery_worker(pool="solo", INTEROP_ACKS_LATE=acks_late)
    assert await _result(celery_app, job_id, timeout=30) == 7
    ((key, worker),) = ran(interop_dsn)
    assert key == 7 and worker.startswith("celery:")
    ((_, state, attempts, _, _),) = job_rows(interop_dsn, f"id = '{job_id}'")
    # The lost delivery counts as an attempt (within the row's lost-delivery budget).
    assert state == "succeeded" and attempts == 2


async def test_compat_async_result_reads_what_a_celery_worker_stored(interop_dsn, celery_app, celery_worker):
    """Path 3, the other way: ``chancy.compat``'s AsyncResult reads results a stock Celery
    worker wrote through the Chancy result backend."""
    from chancy.compat import Celery as CompatCelery

    compat = CompatCelery("compat_reader", broker=interop_dsn, set_as_current=False)
    celery_worker(pool="solo")
    good = celery_app.tasks["interop.add"].delay(40, 2)
    bad = celery_app.tasks["interop.fail"].delay("from celery")
    try:
        assert await asyncio.to_thread(compat.AsyncResult(good.id).get, timeout=20) == 42
        with pytest.raises(ValueError, match="from celery"):
            await asyncio.to_thread(compat.AsyncResult(bad.id).get, timeout=20)
        result = compat.AsyncResult(bad.id)
        assert result.state == "FAILURE" and "from celery" in result.traceback
    finally:
        await compat.chancy.close()


async def test_compat_chain_and_link_run_by_a_celery_worker(interop_dsn, celery_app, celery_worker):
    """A chain and a link applied through ``chancy.compat`` (parked rows, not a message
    embed) advance when a stock Celery worker finishes each step."""
    from chancy.compat import Celery as CompatCelery
    from chancy.compat import chain

    compat = CompatCelery("compat_producer", broker=interop_dsn, set_as_current=False)
    compat.conf.task_default_queue = "celery"

    @compat.task(name="interop.add")
    def add(a, b):
        return a + b

    @compat.task(name="interop.fail")
    def fail(message):
        raise ValueError(message)

    celery_worker(pool="solo")
    try:
        chained = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
        assert await _result(celery_app, chained.id) == 10
        linked = add.apply_async((5, 5), link=add.s(100))
        assert await _result(celery_app, linked.id) == 10
        follower = compat.chancy.get_job_sync(uuid.UUID(linked.id))
        assert follower is not None
        assert await eventually(lambda: _succeeded_with(interop_dsn, 110), timeout=20)
    finally:
        await compat.chancy.close()


def _succeeded_with(dsn: str, value: int) -> bool:
    with psycopg.connect(dsn) as conn:
        return bool(conn.execute("SELECT 1 FROM chancy_jobs WHERE state = 'succeeded' AND result = %s::jsonb",
                                 (str(value),)).fetchall())


async def test_pickled_arguments_reach_a_pickle_celery_worker_as_sent(celery_app, celery_worker):
    """A pickle app moving its broker only: objects JSON cannot hold survive the row."""
    celery_app.conf.accept_content = ["pickle", "json"]
    celery_worker(pool="solo", INTEROP_ACCEPT="pickle,json", C_FORCE_ROOT="1")  # CI runs as root
    sent = celery_app.tasks["interop.kinds"].apply_async(({1, 2}, (3, 4), b"x"), serializer="pickle")
    assert await _result(celery_app, sent.id) == ["set", "tuple", "bytes"]


async def test_revoke_from_a_stock_celery_app_cancels_the_row(interop_dsn, celery_app, chancy_app):
    """``app.control.revoke`` / ``AsyncResult.revoke`` is a broadcast; the transport turns it
    into a cancel, so no worker of either kind ever receives the task."""
    add = celery_app.tasks["interop.add"]
    waiting = add.apply_async((1, 2), countdown=60)
    also_waiting = add.apply_async((3, 4), countdown=60)
    celery_app.control.revoke(waiting.id)
    also_waiting.revoke()
    for result in (waiting, also_waiting):
        assert (await chancy_app.get_job(uuid.UUID(result.id))).state is JobState.CANCELLED
        assert result.state == "REVOKED"
    assert celery_app.control.inspect(timeout=0.2).ping() is None  # reaches no worker, as documented
