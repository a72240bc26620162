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
        # Every outcome was buffered through the outage and written back: none of the
        # jobs had to be recovered and run again.
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT max(attempts), count(*) FILTER (WHERE errors <> '[]') "
                                "FROM chancy_jobs").fetchone() == (1, 0)
        successes = success_counts(dsn)
        assert len(successes) == JOBS and set(successes.values()) == {1}
        # The outage really hit the workers mid-run: their LISTEN connections dropped and
        # outcomes of jobs that finished meanwhile had to be kept and written later.
        assert "LISTEN connection failed" in outputs, outputs[-3000:]
        assert "outcome(s) failed" in outputs, outputs[-3000:]
    finally:
        for worker in workers:
            worker.cleanup()
        pg.close()
