"""Runtime queue settings observed from the outside (timestamps in the job rows): a global
rate limit across workers, pause (with and without an end), concurrency, delete."""

import asyncio
from datetime import datetime, timedelta, timezone

import cluster_tasks
import pytest

from chancy import ConfigurationError, Job, JobState, Queue
from chancy.plugins.queues import QueueAdmin
from chancy.testing import eventually, running_worker

FAST = dict(heartbeat_interval=0.5, settings_interval=0.5)


async def _started_times(app, refs):
    return sorted([(await ref.wait(30)).started_at for ref in refs])


async def test_rate_limit_holds_across_two_workers_in_every_sliding_window(make_app):
    app = await make_app(Queue("default", concurrency=10, polling_interval=0.1))
    await QueueAdmin(app).set_rate_limit("default", 4, per=1.0)
    refs = await app.push_many([Job(cluster_tasks.noop, args=[i]) for i in range(12)])
    async with running_worker(app, **FAST), running_worker(app, **FAST):
        started = await _started_times(app, refs)
    for i, first in enumerate(started):
        in_window = [t for t in started[i:] if t - first < timedelta(seconds=1)]
        assert len(in_window) <= 4, [t.isoformat() for t in started]
    assert started[-1] - started[0] >= timedelta(seconds=2)  # 12 jobs at 4/s need 3 windows


async def test_pause_stops_claims_until_resumed_and_running_jobs_finish(make_app):
    app = await make_app(Queue("default", concurrency=4, polling_interval=0.2))
    admin = QueueAdmin(app)
    async with running_worker(app, **FAST):
        busy = await app.push(cluster_tasks.slow, 1)
        await eventually(lambda: _state_is(busy, JobState.RUNNING))
        await admin.pause("default")
        waiting = await app.push(cluster_tasks.noop, 2)
        assert (await busy.wait(5)).state is JobState.SUCCEEDED  # a pause does not stop running jobs
        await asyncio.sleep(0.6)  # more than a polling interval and a settings re-read
        assert (await waiting.get()).state is JobState.PENDING
        settings = await admin.get("default")
        assert settings.paused and settings.paused_until_resumed
        resumed_at = datetime.now(timezone.utc)
        await admin.resume("default")
        record = await waiting.wait(5)
    assert record.started_at >= resumed_at - timedelta(seconds=0.1)


async def test_pause_until_a_time_ends_by_itself(make_app):
    app = await make_app(Queue("default", concurrency=4, polling_interval=0.2))
    admin = QueueAdmin(app)
    await admin.pause("default", until=timedelta(seconds=1))
    settings = await admin.get("default")
    assert settings.paused and not settings.paused_until_resumed
    paused_until = settings.paused_until
    ref = await app.push(cluster_tasks.noop, 1)
    async with running_worker(app, **FAST):
        record = await ref.wait(10)
    assert record.started_at >= paused_until
    assert (await admin.get("default")).paused_until is None


async def test_runtime_concurrency_caps_each_worker(make_app):
    app = await make_app(Queue("default", concurrency=8, polling_interval=0.1))
    await QueueAdmin(app).set_concurrency("default", 2)
    refs = await app.push_many([Job(cluster_tasks.slow, args=[i]) for i in range(6)])
    async with running_worker(app, **FAST):
        records = [await ref.wait(10) for ref in refs]
    for record in records:
        assert len(_running_at(records, record.started_at)) <= 2


async def test_worker_picks_up_a_concurrency_change_without_restart(make_app):
    app = await make_app(Queue("default", concurrency=8, polling_interval=0.1))
    admin = QueueAdmin(app)
    await admin.set_concurrency("default", 1)
    async with running_worker(app, **FAST):
        first = await app.push_many([Job(cluster_tasks.slow, args=[i]) for i in range(3)])
        records = [await ref.wait(10) for ref in first]
        assert all(len(_running_at(records, r.started_at)) == 1 for r in records)
        await admin.set_concurrency("default", None)  # back to the code's 8
        await asyncio.sleep(0.3)
        second = await app.push_many([Job(cluster_tasks.slow, args=[i]) for i in range(4)])
        records = [await ref.wait(10) for ref in second]
    assert max(r.started_at for r in records) < min(r.completed_at for r in records)  # all ran at once


async def test_delete_with_purge_removes_waiting_jobs_and_settings(make_app):
    app = await make_app()
    admin = QueueAdmin(app)
    await admin.declare("default", concurrency=2, rate_limit=(10, 60))
    await app.push_many([Job(cluster_tasks.noop, args=[i]) for i in range(3)])
    assert [q.name for q in await admin.list()] == ["default"]
    assert await admin.delete("default", purge=True) == 3
    assert await admin.list() == []
    assert admin.list_sync() == []


@pytest.mark.parametrize("call, message", [
    (lambda a: a.set_concurrency("default", 0), "concurrency"),
    (lambda a: a.set_rate_limit("default", 0, per=1), "rate limit"),
    (lambda a: a.set_rate_limit("default", 5, per=0), "period"),
    (lambda a: a.pause("default", until=datetime(2030, 1, 1)), "timezone-aware"),
    (lambda a: a.pause("default", until=-3), "positive"),
    (lambda a: a.pause("", until=3), "Queue name"),
])
async def test_bad_settings_are_refused_with_what_to_fix(make_app, call, message):
    admin = QueueAdmin(await make_app())
    with pytest.raises(ConfigurationError, match=message):
        await call(admin)
    assert await admin.list() == []


def _running_at(records, moment):
    """Jobs running at ``moment``. A job's completed_at is written a few milliseconds after
    its slot was freed (outcomes are batched), so each run counts as ending 0.1 s early
    (each task sleeps 0.2 s)."""
    return [r for r in records if r.started_at <= moment < r.completed_at - timedelta(seconds=0.1)]


async def _state_is(ref, state):
    return (await ref.get()).state is state


async def test_a_queue_declared_at_runtime_is_served_and_dropped_without_restart(make_app):
    app = await make_app(Queue("default", polling_interval=0.1))
    admin = QueueAdmin(app)
    await admin.declare("reports", concurrency=3)
    early = await app.push(Job(cluster_tasks.noop, args=[1], queue="reports"))
    async with running_worker(app, **FAST) as worker:
        assert (await early.wait(5)).result == 1  # declared before the worker started
        await admin.declare("emails", concurrency=2)
        late = await app.push(Job(cluster_tasks.noop, args=[2], queue="emails"))
        assert (await late.wait(5)).result == 2  # declared while it ran
        refs = await app.push_many([Job(cluster_tasks.slow, args=[i], queue="emails") for i in range(4)])
        records = [await ref.wait(10) for ref in refs]
        assert all(len(_running_at(records, r.started_at)) <= 2 for r in records)
        await admin.delete("emails")
        await eventually(lambda: "emails" not in [q.name for q in worker.queues], timeout=5)
        orphan = await app.push(Job(cluster_tasks.noop, args=[3], queue="emails"))
        await asyncio.sleep(0.3)
        assert (await orphan.get()).state is JobState.PENDING
    async with running_worker(app, queues=["default"], **FAST) as worker:
        assert [q.name for q in worker.queues] == ["default"]  # named queues only
