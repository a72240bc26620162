"""The in-memory queue honours the same contract, without any database."""

import asyncio

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


# --- the cluster, in memory: no Postgres anywhere ----------------------------------------------
#: An app whose Postgres would be here: nothing listens, so any use of it fails the test.
NO_POSTGRES = "postgresql://nobody:secret@127.0.0.1:9/none?connect_timeout=1"


async def test_a_worker_in_memory_leads_and_obeys_a_pause_at_once_without_postgres():
    """Inside in_memory(), the worker's cluster services (heartbeat, queue settings, the
    leader seat) run on the in-memory store: a pause from QueueAdmin stops its claims at
    once (it hears of the change, as Postgres' workers do through NOTIFY), a resume starts
    them again."""
    from chancy import Queue
    from chancy.plugins.leadership import current_leader
    from chancy.plugins.queues import QueueAdmin
    from chancy.testing import in_memory

    app = Chancy(NO_POSTGRES, plugins=[Queue("default", concurrency=2)])
    with in_memory(app):
        admin = QueueAdmin(app)
        async with running_worker(app, settings_interval=60) as worker:
            await eventually(lambda: worker.is_leader)
            assert await current_leader(app) == worker.worker_id
            await admin.pause("default")
            assert (await admin.get("default")).paused_until_resumed
            await eventually(lambda: all(p.paused_until is not None for p in worker._producers.values()))
            ref = await app.push(core_tasks.add, 2, 3)
            await asyncio.sleep(0.3)
            assert (await ref.get()).state is JobState.PENDING
            admin.resume_sync("default")
            assert (await ref.wait(timeout=5)).result == 5
        assert await current_leader(app) is None  # gave the seat up when it stopped
    assert not app.store.connected


async def test_in_memory_blocks_do_not_share_queue_settings():
    from chancy import Queue
    from chancy.plugins.queues import QueueAdmin
    from chancy.testing import in_memory

    app = Chancy(NO_POSTGRES, plugins=[Queue("default")])
    with in_memory(app):
        await QueueAdmin(app).pause("default")
        assert [s.name for s in await QueueAdmin(app).list()] == ["default"]
    with in_memory(app):
        assert await QueueAdmin(app).list() == []


async def test_recovery_in_memory_sends_back_the_job_of_a_worker_that_stopped_heartbeating():
    from chancy.plugins.recovery import recover

    app = Chancy(plugins=[MemoryQueue("default")])
    ref = await app.push(Job(core_tasks.add, args=[1, 1], max_attempts=2, backoff=Backoff(base=0.01)))
    [claimed] = await app.queues["default"].claim("gone-worker", 1)
    assert claimed.id == ref.id
    assert await recover(app) == 1
    async with running_worker(app):
        record = await ref.wait(timeout=5)
    assert (record.state, record.attempts, record.errors[0]["type"]) == (JobState.SUCCEEDED, 2, "chancy.WorkerLost")
