"""Proof: Postgres restarted while a stock Celery worker drains tasks through Chancy's
broker and result backend. Every task ends SUCCESS with its value: a result written
while the server was down is written once it is back, never recorded as a failure."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from celery.result import AsyncResult

TASKS = 400
DOWN_FOR = 2.0
PAUSE = 0.01
CLUSTER_TESTS = Path(__file__).parent.parent / "cluster"


@pytest.fixture
def restartable_postgres() -> Iterator:
    """The cluster tests' restartable server (its own, not the session's shared one)."""
    sys.path.insert(0, str(CLUSTER_TESTS))
    try:
        from cluster_support import RestartablePostgres
    finally:
        sys.path.remove(str(CLUSTER_TESTS))
    pg = RestartablePostgres()
    yield pg
    pg.close()


@pytest.fixture
def dsn(restartable_postgres) -> str:
    """This module's tests run on the restartable server (``interop_dsn`` builds on it)."""
    return restartable_postgres.dsn


def _states(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM chancy_jobs GROUP BY state").fetchall())


async def _until(predicate, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, describe()
        await asyncio.sleep(0.05)


def _publish_steadily(task) -> list:
    """Publish through the outage too (each publish must wait for the server, not fail)."""
    sent = []
    for i in range(TASKS):
        sent.append(task.delay(i, i))
        time.sleep(PAUSE)
    return sent


async def test_results_survive_a_postgres_restart(restartable_postgres, interop_dsn, celery_app, celery_worker):
    # A liveness timeout longer than the outage: the restart alone must not recover rows.
    worker = celery_worker(pool="prefork", concurrency=2, INTEROP_CONSUMER_TIMEOUT="20", INTEROP_HEARTBEAT="1")
    add = celery_app.tasks["interop.add"]
    due_after_restart = add.apply_async((-1, -1), countdown=DOWN_FOR + 3)
    publishing = asyncio.create_task(asyncio.to_thread(_publish_steadily, add))
    await _until(lambda: _states(interop_dsn).get("succeeded", 0) >= TASKS // 4, 30, worker.log)
    waiting = asyncio.create_task(asyncio.to_thread(due_after_restart.get, timeout=30))  # waits through it
    restartable_postgres.stop_server()
    await asyncio.sleep(DOWN_FOR)
    restartable_postgres.start_server()
    sent = await publishing
    assert await waiting == -2
    await _until(lambda: _states(interop_dsn).get("succeeded", 0) + _states(interop_dsn).get("failed", 0) > TASKS,
                 40, lambda: f"{_states(interop_dsn)}\n{worker.log()[-5000:]}")
    outcomes = [(r.state, r.result) for r in (AsyncResult(s.id, app=celery_app) for s in sent)]
    wrong = [(i, outcome) for i, outcome in enumerate(outcomes) if outcome != ("SUCCESS", 2 * i)]
    assert not wrong, f"{len(wrong)} of {TASKS} tasks lost their result: {wrong[:5]}\n{worker.log()[-5000:]}"
    assert _states(interop_dsn) == {"succeeded": TASKS + 1}
    assert worker.process.poll() is None, worker.log()
