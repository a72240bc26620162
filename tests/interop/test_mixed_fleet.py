"""Path 4: stock Celery workers and a Chancy worker drain the same queue at once; one
Celery worker is killed with SIGKILL midway. Every job runs (at least once), none is
lost, and only jobs of the killed worker may have run twice."""

from __future__ import annotations

import threading

import psycopg

from chancy import Chancy
from chancy.execution import registry
from chancy.job import Job
from chancy.queues.pg import Queue
from chancy.testing import eventually, running_worker

from interop_support import ran

JOBS = 2000


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


def _unfinished(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT state, taken_by, count(*) FROM chancy_jobs WHERE state <> 'succeeded' GROUP BY 1, 2").fetchall()


async def test_mixed_fleet_drains_every_job_despite_a_killed_worker(
    interop_dsn, celery_app, celery_worker, monkeypatch,
):
    recorder = psycopg.connect(interop_dsn, autocommit=True)
    lock = threading.Lock()

    def record(key, seconds=0.0):  # the Chancy side of the task `interop.record`
        with lock:
            recorder.execute("INSERT INTO interop_ran (key, worker) VALUES (%s, 'chancy')", (key,))
        return key

    monkeypatch.setitem(registry, "interop.record", record)
    # Half the jobs come from a stock Celery producer, half from Chancy's own push.
    for key in range(JOBS // 2):
        celery_app.tasks["interop.record"].delay(key)
    app = Chancy(interop_dsn, plugins=[Queue("celery", executor="thread", concurrency=2)])
    # max_attempts as chancy.compat sets it for Celery's default max_retries=3: the budget
    # that lets a job lost with its worker run again.
    await app.push_many([Job("interop.record", args=[key], queue="celery", max_attempts=4)
                         for key in range(JOBS // 2, JOBS)])

    victim = celery_worker(pool="prefork", concurrency=2, INTEROP_ACKS_LATE="1", INTEROP_PREFETCH="8")
    survivor = celery_worker(pool="solo", INTEROP_ACKS_LATE="1")
    try:
        async with running_worker(app, heartbeat_interval=0.5):
            await eventually(lambda: _count(interop_dsn, "SELECT count(*) FROM interop_ran") >= JOBS // 4,
                             timeout=60, message="a quarter of the jobs ran")
            held_by_victim = f"SELECT count(*) FROM chancy_jobs WHERE state = 'running' " \
                             f"AND taken_by LIKE 'celery:%:{victim.process.pid}:%'"
            await eventually(lambda: _count(interop_dsn, held_by_victim) > 0, timeout=30,
                             message="the victim holds rows")
            victim.kill()
            try:
                await eventually(
                    lambda: _count(interop_dsn, "SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded'") == JOBS,
                    timeout=60, message=f"all {JOBS} jobs succeeded",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; unfinished (state, holder, count): {_unfinished(interop_dsn)}") from None
    finally:
        await app.close()
        recorder.close()

    runs = ran(interop_dsn)
    assert {key for key, _ in runs} == set(range(JOBS))
    workers = {worker.split(":")[0] for _, worker in runs}
    assert workers == {"celery", "chancy"}, workers
    # Runs beyond one per job can only be jobs recovered from the killed worker.
    with psycopg.connect(interop_dsn) as conn:
        recovered = conn.execute(
            "SELECT count(*) FROM chancy_jobs WHERE errors @> '[{\"type\": \"chancy.WorkerLost\"}]'").fetchone()[0]
        leftover = conn.execute("SELECT count(*) FROM chancy_jobs WHERE state <> 'succeeded'").fetchone()[0]
    assert leftover == 0
    assert recovered >= 1
    assert len(runs) - JOBS <= recovered
    assert survivor.process.poll() is None, survivor.log()
