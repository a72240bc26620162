"""Proof: when the leader is killed a new one is elected within a bounded time, and cron
fires every tick exactly once throughout."""

import asyncio
import time
from datetime import datetime

import cluster_tasks
from cluster_support import WorkerProcess

from chancy import Chancy, Job
from chancy.plugins.cron import Cron
from chancy.plugins.leadership import current_leader

TICK = 0.5
FAILOVER_BOUND = 5.0  # seconds; leadership polls every 0.2 s in these workers


async def _leader_other_than(app, old, timeout):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        leader = await current_leader(app)
        if leader is not None and leader != old:
            return leader, time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new leader within {timeout}s after {old} was killed")


async def test_killed_leader_is_replaced_quickly_and_cron_fires_each_tick_once(dsn):
    app = Chancy(dsn)
    await app.migrate()
    await Cron.schedule(app, "tick", Job(cluster_tasks.noop, args=[0]), every=TICK)
    workers = [WorkerProcess(dsn, "--cron") for _ in range(3)]
    try:
        by_id = {w.worker_id(): w for w in workers}
        leader, _ = await _leader_other_than(app, None, FAILOVER_BOUND)
        failovers = []
        for _ in range(2):
            await asyncio.sleep(1.2)
            by_id.pop(leader).kill()
            replacement = WorkerProcess(dsn, "--cron")
            workers.append(replacement)
            leader, took = await _leader_other_than(app, leader, FAILOVER_BOUND)
            failovers.append(took)
            by_id[replacement.worker_id()] = replacement
        await asyncio.sleep(1.2)
        await Cron.unschedule(app, "tick")
        codes = [w.terminate() for w in by_id.values()]
        assert codes == [0] * len(codes), "\n".join(w.output() for w in by_id.values())
    finally:
        for worker in workers:
            worker.cleanup()
    print(f"failovers took {[f'{t:.2f}s' for t in failovers]}")
    assert all(t < FAILOVER_BOUND for t in failovers)

    async with app.store.connection() as conn:
        cur = await conn.execute(
            "SELECT unique_key, count(*) FROM chancy_jobs WHERE unique_key LIKE 'cron:tick:%' "
            "GROUP BY unique_key ORDER BY unique_key")
        rows = await cur.fetchall()
    assert all(count == 1 for _, count in rows), [r for r in rows if r[1] > 1]
    ticks = sorted(_tick_time(key) for key, _ in rows)
    gaps = {round((b - a).total_seconds(), 6) for a, b in zip(ticks, ticks[1:])}
    assert gaps == {TICK}, f"ticks missing or repeated: gaps {gaps}"
    assert len(ticks) >= 8  # ~5 s of ticking across two failovers
    await app.close()


def _tick_time(unique_key):
    return datetime.fromisoformat(unique_key.split(":", 2)[2])
