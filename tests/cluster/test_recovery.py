"""Recovery of jobs whose worker stopped heartbeating, and the guards that keep a worker
that was only cut off from overwriting what happened since."""

import asyncio
from datetime import datetime

import cluster_tasks

from chancy import Backoff, Job, JobState, Queue
from chancy.plugins.recovery import recover
from chancy.queue import Transition
from chancy.testing import eventually, running_worker


async def _register(app, worker_id, expires_in):
    async with app.store.connection() as conn:
        await conn.execute(
            "INSERT INTO chancy_workers (worker_id, hostname, pid, expires_at) "
            "VALUES (%s, 'host', 1, now() + make_interval(secs => %s))", (worker_id, expires_in))


async def test_a_dead_workers_job_is_retried_and_the_lost_attempt_counts(make_app):
    app = await make_app()
    # No backoff: the recovered job is claimed again at once (its backoff is tested below).
    ref = await app.push(Job(cluster_tasks.noop, args=[1], max_attempts=2, backoff=Backoff(base=0)))
    await _register(app, "dead", -1)
    await _register(app, "alive", 60)
    queue = app.queue("default")
    [record] = await queue.claim("dead", 1)
    alive_ref = await app.push(cluster_tasks.noop, 2)
    await queue.claim("alive", 1)

    assert await recover(app) == 1
    record = await ref.get()
    assert record.state is JobState.RETRYING and record.attempts == 1
    assert record.errors[0]["type"] == "chancy.WorkerLost" and "dead" in record.errors[0]["message"]
    assert (await alive_ref.get()).state is JobState.RUNNING  # a live worker's job is left alone
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT worker_id FROM chancy_workers")
        assert [r[0] for r in await cur.fetchall()] == ["alive"]

    # The second lost attempt exhausts the budget: failed with the reason, and waiters wake.
    [again] = await queue.claim("ghost", 1)  # a worker that never registered at all
    assert again.attempts == 2
    waiter = asyncio.create_task(ref.wait(5))
    assert await recover(app) == 1
    record = await waiter
    assert record.state is JobState.FAILED
    assert [e["type"] for e in record.errors] == ["chancy.WorkerLost"] * 2
    assert [e["attempt"] for e in record.errors] == [1, 2]


async def test_a_recovered_job_retries_after_its_backoff(make_app):
    """Regression: recovery put a lost job back due at once, whatever its backoff (a job
    that kills its worker was retried in a tight loop); now it waits as after any failed
    attempt, on the job's own backoff (the default one without)."""
    app = await make_app()
    slow = await app.push(Job(cluster_tasks.noop, args=[1], max_attempts=3,
                              backoff=Backoff(base=30, factor=2, jitter=False)))
    default = await app.push(Job(cluster_tasks.noop, args=[2], max_attempts=3))
    queue = app.queue("default")
    assert len(await queue.claim("gone", 2)) == 2  # a worker that never registered
    assert await recover(app) == 2
    for ref, low, high in ((slow, 29, 30.5), (default, 0.4, 1.1)):  # Backoff(): 1 s, half jitter
        record = await ref.get()
        assert record.state is JobState.RETRYING and record.attempts == 1
        assert low <= (record.scheduled_at - _lost_at(record)).total_seconds() <= high, record.scheduled_at
    assert await queue.claim("next", 2) == []  # neither is due yet


def _lost_at(record):
    """When recovery took the job back (its WorkerLost error's time)."""
    return datetime.fromisoformat(record.errors[-1]["at"])


async def test_a_late_outcome_of_a_recovered_attempt_changes_nothing(make_app):
    """Regression: write-back was guarded by worker only, so a cut-off worker that claimed
    the job again could land its old attempt's outcome on the new attempt."""
    app = await make_app()
    ref = await app.push(Job(cluster_tasks.noop, args=[1], max_attempts=3, backoff=Backoff(base=0)))
    queue = app.queue("default")
    await queue.claim("w1", 1)
    assert await recover(app) == 1  # w1 never registered: its job goes back
    [second] = await queue.claim("w1", 1)
    assert second.attempts == 2
    await queue.write_back("w1", [Transition(ref.id, JobState.CANCELLED, attempt=1)])
    assert (await ref.get()).state is JobState.RUNNING
    await queue.write_back("w1", [Transition(ref.id, JobState.SUCCEEDED, result_json="2", attempt=2)])
    record = await ref.get()
    assert record.state is JobState.SUCCEEDED and record.result == 2


async def test_a_job_recovered_while_still_running_here_is_not_run_twice(make_app):
    """Regression: claiming back a job that an older attempt still ran in this worker made
    the executor refuse it and killed the claim loop."""
    app = await make_app(Queue("default", concurrency=4, polling_interval=0.1))
    ref = await app.push(Job(cluster_tasks.slow, args=[1], max_attempts=2))
    async with running_worker(app, heartbeat_interval=5) as worker:
        await eventually(lambda: _state(ref, JobState.RUNNING))
        async with app.store.connection() as conn:  # what recovery does when it thinks we died
            cur = await conn.execute("UPDATE chancy_jobs SET state = 'retrying', scheduled_at = now() "
                                     "WHERE id = %s AND state = 'running'", (ref.id,))
            assert cur.rowcount == 1
            await conn.execute("SELECT pg_notify('chancy_pushed', 'default')")
        record = await ref.wait(10)
        other = await app.push(cluster_tasks.noop, 7)  # the claim loop is still alive
        assert (await other.wait(5)).result == 7
        assert worker.running_jobs == set()
    assert record.state is JobState.SUCCEEDED
    assert "chancy.ReclaimedWhileRunning" in [e["type"] for e in record.errors]


async def test_a_clean_shutdown_deregisters_and_leaves_nothing_to_recover(make_app):
    app = await make_app()
    async with running_worker(app, heartbeat_interval=0.2) as worker:
        async with app.store.connection() as conn:
            cur = await conn.execute("SELECT hostname, pid, queues, expires_at > now() FROM chancy_workers "
                                     "WHERE worker_id = %s", (worker.worker_id,))
            hostname, pid, queues, alive = await cur.fetchone()
        assert queues == ["default"] and alive and pid > 0
        ref = await app.push(cluster_tasks.noop, 1)
        await ref.wait(5)
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM chancy_workers")
        assert (await cur.fetchone())[0] == 0
    assert await recover(app) == 0


async def _state(ref, state):
    return (await ref.get()).state is state
