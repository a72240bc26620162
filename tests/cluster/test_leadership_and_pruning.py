"""Leadership between workers in one process (the cross-process proof is in
test_leader_failover), and retention rules of the pruner."""

import asyncio
from datetime import timedelta

import cluster_tasks
import pytest

from chancy import ConfigurationError, Job, JobState, Queue
from chancy.plugin import Plugin
from chancy.plugins.leadership import Leadership, current_leader
from chancy.plugins.pruner import Rule, prune
from chancy.testing import eventually, running_worker


class LeaderProbe(Plugin):
    """Leader-only: records which workers run it, and how many at once."""

    leader_only = True

    def __init__(self):
        super().__init__()
        self.running: set[str] = set()
        self.most_at_once = 0

    async def run(self, worker):
        self.running.add(worker.worker_id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await asyncio.Event().wait()
        finally:
            self.running.discard(worker.worker_id)


async def test_one_leader_runs_leader_plugins_and_a_successor_takes_over(make_app):
    probe = LeaderProbe()
    app = await make_app(Queue("default"), Leadership(interval=0.1), probe)
    async with running_worker(app, worker_id="first") as first:
        await eventually(lambda: probe.running == {"first"})
        async with running_worker(app, worker_id="second") as second:
            await asyncio.sleep(0.5)  # several election rounds
            assert probe.running == {"first"} and (first.is_leader, second.is_leader) == (True, False)
            assert await current_leader(app) == "first"
            first.request_stop()
            await eventually(lambda: probe.running == {"second"}, timeout=5)
            assert await current_leader(app) == "second"
    assert probe.most_at_once == 1
    assert await current_leader(app) is None


async def test_worker_adds_leadership_and_recovery_unless_configured(make_app):
    app = await make_app()
    async with running_worker(app) as worker:
        names = sorted(type(p).__name__ for p in worker.plugins)
        assert names == ["Leadership", "Recovery"]
        await eventually(lambda: worker.is_leader, timeout=5)
    async with running_worker(app, cluster_plugins=False) as worker:
        assert worker.plugins == []


async def _finished_jobs(app):
    jobs = [Job(cluster_tasks.noop, args=[i], queue=q) for q in ("a", "b") for i in range(3)]
    refs = await app.push_many(jobs)
    async with running_worker(app):
        for ref in refs:
            await ref.wait(5)
    async with app.store.connection() as conn:
        await conn.execute("UPDATE chancy_jobs SET state = 'failed' WHERE args = '[0]'")
        await conn.execute("UPDATE chancy_jobs SET completed_at = now() - interval '2 hours'")
    return refs


async def _remaining(app):
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT queue, state, count(*) FROM chancy_jobs GROUP BY 1, 2 ORDER BY 1, 2")
        return await cur.fetchall()


async def test_prune_rules_select_by_age_state_and_queue_in_batches(make_app):
    app = await make_app(Queue("a", concurrency=3), Queue("b", concurrency=3))
    await _finished_jobs(app)
    live = await app.push(Job(cluster_tasks.noop, args=[9], queue="a"))
    assert await prune(app, [Rule(timedelta(hours=3))]) == 0  # too young
    assert await prune(app, [Rule(timedelta(hours=1), states=["failed"], queues=["a"])]) == 1
    assert await _remaining(app) == [("a", "pending", 1), ("a", "succeeded", 2), ("b", "failed", 1),
                                     ("b", "succeeded", 2)]
    assert await prune(app, [Rule(3600)], batch=1) == 5  # one row per statement, until none is left
    assert await _remaining(app) == [("a", "pending", 1)]
    assert (await live.get()).state is JobState.PENDING


@pytest.mark.parametrize("kwargs, message", [
    (dict(older_than=60, states=["running"]), "finished jobs"),
    (dict(older_than=60, states=[]), "no states"),
    (dict(older_than=-1), "negative"),
    (dict(older_than=60, queues="a"), "list of names"),
])
def test_bad_prune_rules_are_refused(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        Rule(**kwargs)
