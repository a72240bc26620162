"""The in-memory queue honours the same contract, without any database."""

import pytest

import core_tasks
from chancy import Backoff, Chancy, Job, JobState
from chancy.store.memory import MemoryQueue
from chancy.testing import eventually, running_worker


@pytest.fixture
def app():
    return Chancy(plugins=[MemoryQueue("default", concurrency=2)])


async def test_push_run_wait(app):
    ref = await app.push(core_tasks.add, 1, 2)
    async with running_worker(app):
        record = await ref.wait(timeout=5)
    assert (record.state, record.result) == (JobState.SUCCEEDED, 3)


async def test_priority_unique_retry_and_cancel(app):
    low = await app.push(Job(core_tasks.record_order, args=["low"], priority=0, queue="default"))
    high = await app.push(Job(core_tasks.record_order, args=["high"], priority=9, queue="default"))
    assert await app.push(Job(core_tasks.add, args=[1, 1], unique_key="k")) == \
        await app.push(Job(core_tasks.add, args=[1, 1], unique_key="k"))
    flaky = await app.push(Job(core_tasks.fail_until_attempt, args=[2], max_attempts=2, backoff=Backoff(base=0.01)))
    cancelled = await app.push(Job(core_tasks.add, args=[0, 0]).after(60))
    assert await cancelled.cancel()
    async with running_worker(app):
        records = {name: await ref.wait(timeout=5) for name, ref in [("low", low), ("high", high), ("flaky", flaky)]}
    assert records["high"].started_at <= records["low"].started_at
    assert records["flaky"].result == 2 and len(records["flaky"].errors) == 1
    assert (await cancelled.get()).state is JobState.CANCELLED


async def test_cancel_running_and_sync_wait(app):
    ref = await app.push(core_tasks.async_sleep, 30)
    async with running_worker(app) as worker:
        await eventually(lambda: ref.id in worker.running_jobs)
        assert ref.cancel_sync()
        assert ref.wait_sync(timeout=5).state is JobState.CANCELLED
    with pytest.raises(TypeError, match="no transactions"):
        app.push_many_sync([Job(core_tasks.add, args=[1, 1])], connection=object())


async def test_immediate_retry_wakes_the_worker():
    app = Chancy(plugins=[MemoryQueue("default", concurrency=2, polling_interval=30)])
    async with running_worker(app):
        ref = await app.push(Job(core_tasks.retry_with_countdown, args=[0], max_attempts=2))
        record = await ref.wait(timeout=4)
    assert (record.state, record.attempts) == (JobState.SUCCEEDED, 2)
