"""Proof: Postgres stopped and started in the middle of a run. Workers keep the jobs they
hold, reconnect, write back what they buffered and resume claiming: no worker exits, no
job is lost, no success is recorded twice."""

import asyncio
import time

import cluster_tasks
import psycopg
from cluster_support import RestartablePostgres, WorkerProcess, install_success_audit, states, success_counts

from chancy import Chancy, Job

JOBS = 2000
DOWN_FOR = 2.0


async def test_postgres_restart_mid_run_loses_nothing_and_no_worker_exits():
    pg = RestartablePostgres()
    workers = []
    try:
        dsn = pg.dsn
        app = Chancy(dsn)
        await app.migrate()
        install_success_audit(dsn)
        await app.push_many([Job(cluster_tasks.slow, args=[i], max_attempts=5) for i in range(JOBS)])
        await app.close()
        # A liveness timeout longer than the outage: the restart alone must not cost attempts.
        workers = [WorkerProcess(dsn, "--liveness", "15") for _ in range(3)]
        for worker in workers:
            worker.worker_id()
        deadline = time.monotonic() + 60
        while states(dsn)["succeeded"] < JOBS // 4:
            assert time.monotonic() < deadline, states(dsn)
            await asyncio.sleep(0.05)
        with psycopg.connect(dsn) as conn:
            stopped_at = conn.execute("SELECT now()").fetchone()[0]
        pg.stop_server()
        await asyncio.sleep(DOWN_FOR)  # jobs held by the workers keep running meanwhile
        assert [w.process.poll() for w in workers] == [None] * 3, "a worker exited while Postgres was down"
        pg.start_server()
        while states(dsn).keys() - {"succeeded"}:
            assert time.monotonic() < deadline, states(dsn)
            assert [w.process.poll() for w in workers] == [None] * 3, "a worker exited"
            await asyncio.sleep(0.1)
        outputs = "\n".join(w.output() for w in workers)
        codes = [w.terminate() for w in workers]
        assert codes == [0, 0, 0], outputs
        assert states(dsn) == {"succeeded": JOBS}
        with psycopg.connect(dsn) as conn:
            # None of the jobs had to be recovered and run again...
            assert conn.execute("SELECT max(attempts), count(*) FILTER (WHERE errors <> '[]') "
                                "FROM chancy_jobs").fetchone() == (1, 0)
            # ...and jobs that were running when the server stopped (each takes 0.2 s)
            # finished while it was down: their outcomes were held and written back later.
            straddling = conn.execute(
                "SELECT count(*) FROM chancy_jobs WHERE started_at < %s "
                "AND completed_at > %s + make_interval(secs => %s)", (stopped_at, stopped_at, DOWN_FOR)).fetchone()[0]
        assert straddling > 0
        successes = success_counts(dsn)
        assert len(successes) == JOBS and set(successes.values()) == {1}
        assert "LISTEN connection failed" in outputs, outputs[-3000:]  # the outage reached the workers
    finally:
        for worker in workers:
            worker.cleanup()
        pg.close()
