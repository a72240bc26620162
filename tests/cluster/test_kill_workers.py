"""Proof: worker processes killed with SIGKILL at random while 5,000 jobs run lose none,
and a job that kills every worker that runs it ends ``failed`` with the reason."""

import asyncio
import random
import time

import cluster_tasks
from cluster_support import WorkerProcess, install_success_audit, seed_from_env, states, success_counts

from chancy import Chancy, Job, JobState

JOBS = 5000
POISON = 3
WORKERS = 3
KILLS = 6


async def test_random_kill_9_of_workers_loses_no_job_and_records_each_success_once(dsn):
    rng = random.Random(seed_from_env("kill -9 chaos"))
    app = Chancy(dsn)
    await app.migrate()
    install_success_audit(dsn)
    refs = await app.push_many([Job(cluster_tasks.noop, args=[i], max_attempts=20) for i in range(JOBS)])
    poison = await app.push_many([Job(cluster_tasks.kill_my_worker, max_attempts=2) for _ in range(POISON)])
    workers = [WorkerProcess(dsn) for _ in range(WORKERS)]
    kills = 0
    try:
        deadline = time.monotonic() + 90
        while states(dsn).keys() - {"succeeded", "failed"}:
            assert time.monotonic() < deadline, f"jobs still unfinished: {states(dsn)}"
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            # Replace workers the poison jobs killed; kill one more at random, KILLS times.
            for i, worker in enumerate(workers):
                if worker.process.poll() is not None:
                    workers[i] = WorkerProcess(dsn)
            if kills < KILLS:
                victim = rng.randrange(len(workers))
                workers[victim].kill()
                workers[victim] = WorkerProcess(dsn)
                kills += 1
        for worker in workers:
            worker.worker_id()  # a replacement still starting up has no SIGTERM handler yet
        codes = [worker.terminate() for worker in workers]
        outputs = "\n".join(worker.output() for worker in workers)
    finally:
        for worker in workers:
            worker.cleanup()
    assert codes == [0] * len(workers), outputs

    final = states(dsn)
    assert final == {"succeeded": JOBS, "failed": POISON}, final
    # No success was recorded twice, and every pushed job is accounted for.
    successes = success_counts(dsn)
    assert set(successes.values()) == {1}
    assert set(successes) == {ref.id for ref in refs}
    for ref in rng.sample(refs, 50):
        record = await ref.get()
        assert record.result == int(record.args[0])
    for ref in poison:
        record = await ref.get()
        assert record.state is JobState.FAILED and record.attempts == 2
        assert [e["type"] for e in record.errors] == ["chancy.WorkerLost"] * 2
        assert "stopped heartbeating" in record.errors[-1]["message"]
    # The kills hit running jobs: some succeeded only after a recovered attempt.
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded' AND errors <> '[]'")
        recovered = (await cur.fetchone())[0]
    print(f"{kills} kills, {recovered} jobs succeeded after a lost attempt")
    assert recovered > 0
    await app.close()
