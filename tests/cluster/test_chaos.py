"""Proof under combined faults: three workers reach Postgres through a fault proxy while
3,000 jobs are pushed through it, and meanwhile workers are killed with SIGKILL (and
replaced), Postgres is restarted, a claim's answer is lost after it committed, and every
connection is cut. Then every row is audited: no pushed job lost, none left stranded once
the cluster settled, none succeeded twice.

The lost claim answer comes after the kills and the restart on purpose: either of those
can expire the worker concerned, and recovery of an expired worker's jobs would hide a
worker that, alive, never gives back jobs it does not know it holds."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import cluster_tasks
import psycopg
from cluster_support import (
    CLAIM_SQL,
    UNFINISHED,
    RestartablePostgres,
    WorkerProcess,
    assert_each_success_recorded_once,
    install_success_audit,
    jobs_with_lost_attempts,
    missing_jobs,
    running_by_worker,
    seed_from_env,
    settle,
)
from faultproxy import FaultProxy

from chancy import Chancy, Job
from chancy.errors import ChancyError

JOBS = 3000
BATCH = 50
PUSH_PAUSE = 0.25  # 60 batches over ~15 s: the faults all land while jobs keep coming
# Each job takes 0.2 s, so a worker holds running jobs most of the time: kills take some down.
WORKERS = 3
STEP_PAUSE = 1.5
DOWN_FOR = 1.5
SETTLE_WITHIN = 45.0  # after the last push; recovery needs liveness (1 s) + its interval


@dataclass
class Tally:
    """What the test did to the cluster, for the summary."""

    kills: int = 0
    restarts: int = 0
    cuts: int = 0
    lost_claim_rows: int = 0
    failed_pushes: int = 0
    pushed: list[uuid.UUID] = field(default_factory=list)


class Cluster:
    """The workers, all connected through the proxy, and the faults done to them."""

    def __init__(self, pg: RestartablePostgres, proxy: FaultProxy, rng: random.Random, tally: Tally) -> None:
        self.pg, self.proxy, self.rng, self.tally = pg, proxy, rng, tally
        self.dsn = proxy.dsn(pg.dsn)
        self.workers = [WorkerProcess(self.dsn) for _ in range(WORKERS)]

    def kill_one(self) -> None:
        """SIGKILL a worker that is running jobs, and start a replacement."""
        victim = self._busy_worker()
        self.workers[victim].kill()
        self.workers[victim].cleanup()
        self.workers[victim] = WorkerProcess(self.dsn)
        self.tally.kills += 1

    def _busy_worker(self, timeout: float = 5.0) -> int:
        """The index of a worker holding running jobs (jobs come in bursts: wait for one),
        else of any: a kill of an idle worker would prove little."""
        index_by_id = {worker.worker_id(): i for i, worker in enumerate(self.workers)}
        deadline = time.monotonic() + timeout
        while not (busy := sorted(running_by_worker(self.pg.dsn).keys() & index_by_id.keys())):
            if time.monotonic() > deadline:
                return self.rng.randrange(len(self.workers))
            time.sleep(0.01)
        return index_by_id[self.rng.choice(busy)]

    def restart_postgres(self) -> None:
        self.pg.stop_server()
        time.sleep(DOWN_FOR)
        self.pg.start_server()
        self.tally.restarts += 1

    def cut(self) -> None:
        self.proxy.cut()
        self.tally.cuts += 1

    def lose_a_claim_reply(self, tries: int = 10) -> None:
        """Drop the answer of a claim that took jobs (an idle claim's would prove nothing)."""
        for _ in range(tries):
            dropped = self.proxy.drop_reply_after(CLAIM_SQL)
            assert dropped.wait(10), "no claim went through the proxy"
            if dropped.data_rows:
                self.tally.lost_claim_rows += dropped.data_rows
                return
        raise AssertionError(f"none of {tries} claims whose answer was lost had taken a job")

    def assert_alive(self) -> None:
        """Faults other than kills must not make a worker exit."""
        for worker in self.workers:
            assert worker.process.poll() is None, f"worker {worker.pid} exited:\n{worker.output()[-3000:]}"

    def stop(self) -> list[int]:
        """Drain every worker; their exit codes."""
        for worker in self.workers:
            worker.worker_id()  # a replacement still starting up has no SIGTERM handler yet
        return [worker.terminate() for worker in self.workers]

    def output(self) -> str:
        return "\n".join(worker.output() for worker in self.workers)

    def cleanup(self) -> None:
        for worker in self.workers:
            worker.cleanup()


def push_in_batches(app: Chancy, tally: Tally, stop: threading.Event) -> None:
    """Push JOBS jobs in batches, a batch again when its push failed (a push whose answer
    was lost may have committed: its rows are extra, never missing). The ids of pushes
    that returned are the ones the audit looks for. ``stop`` ends it early (a failed test)."""
    with app:
        while len(tally.pushed) < JOBS and not stop.is_set():
            jobs = [Job(cluster_tasks.slow, args=[len(tally.pushed) + i], max_attempts=20) for i in range(BATCH)]
            try:
                tally.pushed += [ref.id for ref in app.push_many_sync(jobs)]
            except (psycopg.Error, ChancyError):
                tally.failed_pushes += 1
            time.sleep(PUSH_PAUSE)


async def run_faults(cluster: Cluster) -> None:
    """The faults, one every STEP_PAUSE seconds, each in a thread so pushing goes on."""
    steps: list[Callable[[], None]] = [cluster.kill_one, cluster.kill_one, cluster.restart_postgres,
                                       cluster.kill_one, cluster.cut, cluster.lose_a_claim_reply]
    for step in steps:
        await asyncio.sleep(STEP_PAUSE)
        await asyncio.to_thread(step)
        cluster.assert_alive()


async def test_kills_a_restart_a_lost_claim_reply_and_cuts_lose_strand_and_repeat_nothing():
    started = time.monotonic()
    rng = random.Random(seed_from_env("chaos"))
    pg = RestartablePostgres()
    tally = Tally()
    try:
        async with Chancy(pg.dsn) as app:
            await app.migrate()
        install_success_audit(pg.dsn)
        with FaultProxy.for_dsn(pg.dsn) as proxy:
            cluster = Cluster(pg, proxy, rng, tally)
            try:
                for worker in cluster.workers:
                    worker.worker_id()
                stop_pushing = threading.Event()
                pushing = asyncio.create_task(asyncio.to_thread(push_in_batches, Chancy(cluster.dsn), tally,
                                                                stop_pushing))
                try:
                    await run_faults(cluster)
                    await pushing
                finally:
                    stop_pushing.set()
                    await pushing
                counts = await asyncio.to_thread(settle, pg.dsn, SETTLE_WITHIN)
                cluster.assert_alive()
                codes = cluster.stop()
                outputs = cluster.output()
            finally:
                cluster.cleanup()
            connections = proxy.accepted_connections
        took = time.monotonic() - started
        rerun = jobs_with_lost_attempts(pg.dsn)
        print(f"chaos: {dict(counts)}; {tally.kills} kills, {tally.restarts} Postgres restarts, {tally.cuts} cuts, "
              f"a lost claim answer holding {tally.lost_claim_rows} jobs, {tally.failed_pushes} failed pushes, "
              f"{rerun} jobs run again after a lost attempt, "
              f"{connections} proxied connections; {took:.1f}s")

        assert not missing_jobs(pg.dsn, tally.pushed), "pushed jobs lost"
        successes = assert_each_success_recorded_once(pg.dsn)
        stranded = {state: n for state, n in counts.items() if state in UNFINISHED}
        assert not stranded, f"jobs left unfinished {SETTLE_WITHIN}s after the last push: {stranded}"
        assert counts == {"succeeded": sum(counts.values())}, counts
        assert len(successes) == counts["succeeded"]
        assert codes == [0] * WORKERS, outputs[-5000:]
        assert rerun > 0, "the kills took down no running job: they proved nothing"
    finally:
        pg.close()
