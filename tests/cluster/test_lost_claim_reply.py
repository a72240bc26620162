"""A claim that committed but whose answer never reached the worker: the worker is alive
and heartbeating, yet does not know it holds the claimed jobs. They must not stay
``running`` for ever; each must still succeed once."""

import asyncio
import time

import cluster_tasks
from cluster_support import (
    CLAIM_SQL,
    WorkerProcess,
    assert_each_success_recorded_once,
    install_success_audit,
    settle,
)
from faultproxy import FaultProxy

from chancy import Chancy, Job

JOBS = 20
RECOVERED_WITHIN = 30.0


async def test_jobs_of_a_claim_whose_reply_was_lost_still_succeed_once(dsn):
    async with Chancy(dsn) as app:
        await app.migrate()
        install_success_audit(dsn)
        refs = await app.push_many([Job(cluster_tasks.noop, args=[i], max_attempts=3) for i in range(JOBS)])
    with FaultProxy.for_dsn(dsn) as proxy:
        dropped = proxy.drop_reply_after(CLAIM_SQL)
        worker = WorkerProcess(proxy.dsn(dsn))
        try:
            worker.worker_id()
            assert await asyncio.to_thread(dropped.wait, 10), "no claim went through the proxy"
            assert dropped.data_rows == JOBS, "the lost answer was not the claim of every job"
            lost_at = time.monotonic()
            counts = await asyncio.to_thread(settle, dsn, RECOVERED_WITHIN)
            took = time.monotonic() - lost_at
            print(f"after the lost claim reply: {dict(counts)} in {took:.1f}s")
            assert counts == {"succeeded": JOBS}, f"{dict(counts)} {RECOVERED_WITHIN}s after the lost claim reply"
            assert worker.terminate() == 0, worker.output()
        finally:
            worker.cleanup()
    assert set(assert_each_success_recorded_once(dsn)) == {ref.id for ref in refs}
