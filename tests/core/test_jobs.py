"""Pushing, running and reading jobs through the Postgres queue and a real worker."""

import asyncio
import datetime as dt
import decimal
import uuid

import pytest

import core_tasks
from chancy import Backoff, Job, JobState, Queue
from chancy.testing import eventually, running_worker


async def test_push_run_and_wait_returns_result(app):
    ref = await app.push(core_tasks.add, 2, 3)
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.state is JobState.SUCCEEDED
    assert record.result == 5
    assert record.attempts == 1
    assert record.started_at <= record.completed_at


async def test_arguments_round_trip_rich_types(app):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    ident = uuid.uuid4()
    ref = await app.push(Job(core_tasks.echo, args=[when, ident], kwargs={"amount": decimal.Decimal("1.10")}))
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.args == (when, ident)
    assert record.result == {"args": [when, ident], "kwargs": {"amount": decimal.Decimal("1.10")}}


async def test_registered_task_with_defaults(app):
    @app.task(queue="default", max_attempts=2, priority=3)
    def shout(word):
        return word.upper()

    assert shout("x") == "X"  # calling a task runs it inline
    ref = await shout.push("hey")
    record = await ref.get()
    assert (record.func, record.priority, record.max_attempts) == (shout.name, 3, 2)
    async with running_worker(app):
        assert (await ref.wait(timeout=10)).result == "HEY"


async def test_coroutine_task(app):
    ref = await app.push(core_tasks.async_add, 1, 1)
    async with running_worker(app):
        assert (await ref.wait(timeout=10)).result == 2


async def test_higher_priority_runs_first(make_app):
    app = await make_app(Queue("default", concurrency=1))
    refs = [await app.push(Job(core_tasks.record_order, args=[p], priority=p)) for p in (1, 5, 3, -2)]
    async with running_worker(app):
        records = [await ref.wait(timeout=10) for ref in refs]
    started = [r.result for r in sorted(records, key=lambda r: r.started_at)]
    assert started == [5, 3, 1, -2]


async def test_fifo_within_a_priority(make_app):
    app = await make_app(Queue("default", concurrency=1))
    refs = await app.push_many([Job(core_tasks.record_order, args=[i]) for i in range(20)])
    async with running_worker(app):
        records = [await ref.wait(timeout=10) for ref in refs]
    assert [r.result for r in sorted(records, key=lambda r: r.started_at)] == list(range(20))


async def test_retries_with_backoff_then_success(app):
    job = Job(core_tasks.fail_until_attempt, args=[3], max_attempts=3,
              backoff=Backoff(base=0.05, factor=2, jitter=False))
    ref = await app.push(job)
    async with running_worker(app):
        record = await ref.wait(timeout=15)
    assert record.state is JobState.SUCCEEDED
    assert record.result == 3
    assert record.attempts == 3
    assert [e["attempt"] for e in record.errors] == [1, 2]
    assert all("RuntimeError" in e["traceback"] for e in record.errors)


async def test_exhausted_attempts_fail_with_one_traceback_each(app):
    ref = await app.push(Job(core_tasks.fail, args=["nope"], max_attempts=2, backoff=Backoff(base=0.01)))
    async with running_worker(app):
        record = await ref.wait(timeout=15)
    assert record.state is JobState.FAILED
    assert record.attempts == 2
    assert len(record.errors) == 2
    assert "ValueError: nope" in record.traceback


async def test_backoff_delays_the_retry(app):
    ref = await app.push(Job(core_tasks.fail, max_attempts=2, backoff=Backoff(base=30, jitter=False)))
    async with running_worker(app):
        record = await eventually(lambda: _in_state(ref, JobState.RETRYING))
    delay = (record.scheduled_at - record.started_at).total_seconds()
    assert 29 < delay < 32


async def test_task_can_ask_for_a_retry_with_countdown(app):
    ref = await app.push(Job(core_tasks.retry_with_countdown, args=[0.1], max_attempts=2))
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.state is JobState.SUCCEEDED
    assert record.result == "retried"
    assert record.attempts == 2


async def test_scheduled_job_waits_for_its_time(app):
    ref = await app.push(Job(core_tasks.add, args=[1, 1]).after(1.0))
    assert (await ref.get()).state is JobState.SCHEDULED
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.started_at >= record.scheduled_at
    assert record.state is JobState.SUCCEEDED


async def test_far_future_job_is_not_run(app):
    ref = await app.push(Job(core_tasks.add, args=[1, 1]).after(3600))
    now_ref = await app.push(core_tasks.add, 2, 2)
    async with running_worker(app):
        await now_ref.wait(timeout=10)
    assert (await ref.get()).state is JobState.SCHEDULED


async def test_unique_key_returns_the_live_job(app):
    first = await app.push(Job(core_tasks.add, args=[1, 2], unique_key="sum-1-2"))
    second = await app.push(Job(core_tasks.add, args=[1, 2], unique_key="sum-1-2"))
    assert first == second
    bulk = await app.push_many([Job(core_tasks.add, args=[1, 2], unique_key="other")] * 3)
    assert len({ref.id for ref in bulk}) == 1
    async with running_worker(app):
        await first.wait(timeout=10)
    third = await app.push(Job(core_tasks.add, args=[1, 2], unique_key="sum-1-2"))
    assert third != first  # the key is free again once the job has finished


async def test_cancel_pending_job(app):
    ref = await app.push(core_tasks.add, 1, 1)
    assert await ref.cancel() is True
    assert await ref.cancel() is False
    async with running_worker(app):
        record = await ref.wait(timeout=5)
    assert record.state is JobState.CANCELLED
    assert record.attempts == 0


async def test_cancel_running_job_stops_it(app):
    ref = await app.push(core_tasks.async_sleep, 30)
    async with running_worker(app) as worker:
        await eventually(lambda: ref.id in worker.running_jobs)
        assert await ref.cancel()
        record = await ref.wait(timeout=5)
        await eventually(lambda: not worker.running_jobs, timeout=5)
    assert record.state is JobState.CANCELLED
    assert record.result is None


async def test_expired_job_is_not_run(app):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    ref = await app.push(Job(core_tasks.add, args=[1, 1], expires_at=past))
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.state is JobState.EXPIRED
    assert record.attempts == 0


async def test_push_many_bulk(app):
    refs = await app.push_many([Job(core_tasks.add, args=[i, i]) for i in range(500)])
    assert len({r.id for r in refs}) == 500
    async with running_worker(app):
        results = [(await r.wait(timeout=20)).result for r in refs]
    assert results == [2 * i for i in range(500)]


async def test_wait_is_woken_by_notification_not_polling(app):
    """The waiter re-reads the row only every 10 s without a notification, so a finish
    seen within a second proves the completion NOTIFY woke it."""
    ref = await app.push(core_tasks.async_sleep, 0.3)
    async with running_worker(app):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ref.wait(timeout=5)
        assert loop.time() - started < 2


async def test_wait_times_out(app):
    ref = await app.push(core_tasks.add, 1, 1)
    with pytest.raises(TimeoutError):
        await ref.wait(timeout=0.2)


async def test_get_unknown_job(app):
    assert await app.get_job(uuid.uuid4()) is None
    with pytest.raises(KeyError):
        await app.wait(uuid.uuid4(), timeout=1)


async def _in_state(ref, state):
    record = await ref.get()
    return record if record.state is state else None


async def test_immediate_retry_wakes_the_queue_instead_of_waiting_a_poll(make_app):
    """A retry due at once is announced like a push; with a 30 s polling interval, a
    second attempt within a few seconds proves the worker was woken."""
    app = await make_app(Queue("default", concurrency=2, polling_interval=30))
    async with running_worker(app):
        await asyncio.sleep(0.5)  # let start-up wake-ups pass: only notifications remain
        ref = await app.push(Job(core_tasks.retry_with_countdown, args=[0], max_attempts=2))
        record = await ref.wait(timeout=4)
    assert (record.state, record.attempts) == (JobState.SUCCEEDED, 2)
