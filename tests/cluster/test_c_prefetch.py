"""Prefetch (``chancy worker --prefetch-multiplier``): jobs claimed ahead of a free slot are
handed back unstarted, their attempt refunded, when the worker stops, and recovered the
same way when it is killed; none is lost or run twice. One CLI worker per step, per pool."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from chancy import Backoff, Chancy, Job, JobState
from chancy.plugins.recovery import recover
from chancy.testing import eventually

HERE = Path(__file__).parent
NOTES = 8
#: With one slot, the multiplier that leaves jobs prefetched in the worker, not in the
#: executor: a process child holds 4 jobs itself (they count as started).
MULTIPLIER = {"thread": "4", "process": "8"}
#: Seconds after its last heartbeat a worker counts as dead: short, for the kill -9 step,
#: yet long enough that a live worker on a loaded machine is not taken for dead.
LIVENESS = 3.0


def start_worker(dsn: str, pool: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    env.pop("CHANCY_DSN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "chancy.cli", "worker", "--dsn", dsn, "-A", "c_prefetch_tasks", "-P", pool,
         "-c", "1", "--prefetch-multiplier", MULTIPLIER[pool], "--heartbeat-interval", "0.2",
         "--liveness-timeout", str(LIVENESS), "-l", "WARNING"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rows(dsn: str) -> dict[str, tuple]:
    """Each job's (state, attempts, started, errors) by id."""
    with psycopg.connect(dsn) as conn:
        return {str(r[0]): r[1:] for r in conn.execute(
            "SELECT id, state, attempts, started_at IS NOT NULL, jsonb_array_length(errors) FROM chancy_jobs")}


def prefetched(dsn: str) -> set[str]:
    """Jobs a worker claimed and has not started."""
    return {job_id for job_id, (state, _, started, _) in rows(dsn).items() if state == "running" and not started}


async def held_with_prefetch(dsn: str, blocker: str) -> set[str]:
    """Wait until the blocker runs and jobs wait prefetched behind it; those jobs."""
    await eventually(lambda: rows(dsn)[blocker][0] == "running" and rows(dsn)[blocker][2] and prefetched(dsn),
                     timeout=30)
    return prefetched(dsn)


@pytest.mark.parametrize("pool", ["thread", "process"])
async def test_prefetched_jobs_go_back_unstarted_on_stop_and_on_kill_9(dsn, tmp_path, pool):
    gate, log = tmp_path / "gate", tmp_path / "ran"
    async with Chancy(dsn) as app:
        await app.migrate()
        # No backoff: once recovered it is due at once, claimed first again and held, so
        # that the next worker prefetches the notes behind it.
        blocker = str((await app.push(Job("c_prefetch_tasks.hold", args=[str(gate)], max_attempts=3,
                                          backoff=Backoff(base=0)))).id)
        notes = [str((await app.push(Job("c_prefetch_tasks.note", args=[str(log)]))).id) for _ in range(NOTES)]

        async def recovered() -> bool:
            await recover(app)
            return not any(state == "running" for state, *_ in rows(dsn).values())

        # kill -9: the prefetched jobs come back pending, their attempt refunded, no error.
        worker = start_worker(dsn, pool)
        try:
            waiting = await held_with_prefetch(dsn, blocker)
        finally:
            worker.kill()
            out = worker.communicate()[0]
        assert waiting <= set(notes), out
        await asyncio.sleep(LIVENESS + 0.5)  # past its liveness timeout
        await eventually(recovered, timeout=20)
        after_kill = rows(dsn)
        for job_id in waiting:
            assert after_kill[job_id] == ("pending", 0, False, 0), (job_id, after_kill[job_id])
        assert after_kill[blocker][:2] == ("retrying", 1) and after_kill[blocker][3] == 1  # it was running

        # SIGTERM: the running job finishes, the prefetched ones go back, attempt refunded.
        worker = start_worker(dsn, pool)
        try:
            waiting = await held_with_prefetch(dsn, blocker)
            before = rows(dsn)
            worker.send_signal(signal.SIGTERM)
            # They go back while the held job still runs (it could not run them meanwhile).
            await eventually(lambda: all(rows(dsn)[i][0] == "pending" for i in waiting), timeout=30)
            gate.touch()
            out = worker.communicate(timeout=60)[0]
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, out
        after_stop = rows(dsn)
        assert after_stop[blocker][0] == "succeeded", out
        for job_id in waiting:
            state, attempts, started, errors = after_stop[job_id]
            assert (state, attempts, started) == ("pending", before[job_id][1] - 1, False), (job_id, out)

        # Every job runs, and each exactly once.
        worker = start_worker(dsn, pool)
        try:
            await eventually(lambda: all(rows(dsn)[i][0] == "succeeded" for i in notes), timeout=30)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
    runs = Counter(log.read_text().split())
    assert runs == Counter({job_id: 1 for job_id in notes})
    final = rows(dsn)
    for job_id in notes:
        assert final[job_id][0] == JobState.SUCCEEDED.value
    # Prefetched at the kill and never started: it ran at its first attempt, with no error.
    assert all(final[job_id][1:] == (1, True, 0) for job_id in after_kill if after_kill[job_id][0] == "pending")
