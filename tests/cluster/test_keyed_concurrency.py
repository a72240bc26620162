"""Per-key concurrency across real workers (``chancy worker`` processes): at most the limit
of a key's jobs run at once whatever worker claims them, every job runs once, a busy key
never holds back other keys or unkeyed jobs, and a killed worker's keyed job gives its
place back once recovered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest

from chancy import Chancy, JobState
from chancy.plugins.recovery import recover
from chancy.queue import Transition
from chancy.testing import eventually

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import keyed_tasks  # noqa: E402  (the workers' app module, by its import path)

LIVENESS = 3.0


def start_worker(dsn: str, pool: str, concurrency: int = 4) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    env.pop("CHANCY_DSN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "chancy.cli", "worker", "--dsn", dsn, "-A", "keyed_tasks", "-P", pool,
         "-c", str(concurrency), "--heartbeat-interval", "0.2", "--liveness-timeout", str(LIVENESS),
         "-l", "WARNING"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def runs(log: Path) -> list[tuple[str, float, float, str]]:
    if not log.exists():
        return []
    return [(key, float(start), float(end), job_id)
            for key, start, end, job_id in (line.split() for line in log.read_text().splitlines())]


def overlaps(log: Path) -> list[tuple]:
    """Pairs of runs of one key that overlapped in time."""
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key, start, end, _ in runs(log):
        by_key[key].append((start, end))
    found = []
    for key, spans in by_key.items():
        spans.sort()
        found += [(key, a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    return found


def states(dsn: str) -> Counter:
    with psycopg.connect(dsn) as conn:
        return Counter(state for (state,) in conn.execute("SELECT state FROM chancy_jobs"))


@pytest.mark.parametrize("pool,task,keys,count", [
    ("process", keyed_tasks.stamp, 5, 100), ("asyncio", keyed_tasks.astamp, 5, 100),
    ("thread", keyed_tasks.stamp, 5, 100), ("thread", keyed_tasks.stamp, 40, 200)])
async def test_no_key_ever_runs_twice_at_once_across_workers(dsn, tmp_path, pool, task, keys, count):
    """3 workers x 4 slots, ``count`` jobs over 5 keys with a limit of 1: each job runs
    once and no two runs of one key overlap (each run logs its start and end). Over 40
    keys, most are free at each claim: the claims racing for one (without the claim's
    lock, two workers take two jobs of one key at once: seen in this test)."""
    log = tmp_path / "runs"
    async with Chancy(dsn) as app:
        await app.migrate()
        workers = [start_worker(dsn, pool) for _ in range(3)]
        try:
            for batch in range(count // 20):  # each push wakes every worker at once: claims at the same instant
                await app.push_many([task.job(f"k{i % keys}", str(log), 0.002)
                                     for i in range(batch * 20, batch * 20 + 20)])
                await asyncio.sleep(0.05)
            await eventually(lambda: states(dsn) == {"succeeded": count}, timeout=120)
        finally:
            stop(workers)
    done = runs(log)
    assert len(done) == count and len({job_id for *_, job_id in done}) == count
    assert overlaps(log) == []


async def test_a_busy_key_holds_back_neither_other_keys_nor_unkeyed_jobs(dsn, tmp_path):
    """A key's long backlog first in line (its jobs 0.3 s each, one at a time): jobs of 20
    other keys and 20 unkeyed ones pushed after it all run while it is still working."""
    busy, others = tmp_path / "busy", tmp_path / "others"
    async with Chancy(dsn) as app:
        await app.migrate()
        await app.push_many([keyed_tasks.stamp.job("busy", str(busy), 0.3) for _ in range(50)])
        workers = [start_worker(dsn, "thread", 4) for _ in range(2)]
        try:
            await eventually(lambda: len(runs(busy)) >= 1, timeout=30)
            await app.push_many([keyed_tasks.stamp.job(f"k{i}", str(others), 0.01) for i in range(20)]
                                + [keyed_tasks.plain.job(str(others)) for _ in range(20)])
            await eventually(lambda: len(runs(others)) == 40, timeout=30)
            assert len(runs(busy)) < 50
            with psycopg.connect(dsn) as conn:
                waiting = conn.execute("SELECT attempts FROM chancy_jobs WHERE state = 'pending'").fetchall()
            assert waiting and {attempts for (attempts,) in waiting} == {0}  # waiting used no attempt
        finally:
            stop(workers)
    assert overlaps(busy) == []


BACKLOG = 20_000


async def test_another_tenants_job_starts_soon_behind_a_big_backlog(dsn, tmp_path):
    """20,000 jobs of tenant A ahead, another tenant's one job starts within 3 s of its push:
    in a plain queue behind A's backlog while A's key is full (the claim goes key by key,
    never reading A's rows), and in a fair queue behind A's burst while A's key has room for
    all of it (the claim takes turns between keys; without fairness B would wait for the
    burst: 20,000 jobs of 5 ms on 4 slots)."""
    log = tmp_path / "runs"
    async with Chancy(dsn) as app:
        await app.migrate()
        await app.push_many([keyed_tasks.stamp.job("A", str(log), 1.0) for _ in range(BACKLOG)])
        burst = keyed_tasks.stamp.job("A", str(log), 0.005).with_options(queue="fair", concurrency=BACKLOG)
        await app.push_many([burst] * BACKLOG)
        with psycopg.connect(dsn) as conn:
            conn.execute("ANALYZE chancy_jobs")
        workers = [start_worker(dsn, "thread", 4)]
        try:
            await eventually(lambda: states(dsn)["running"] >= 2, timeout=30)
            for queue in ("default", "fair"):
                pushed = time.time()
                await app.push(keyed_tasks.stamp.job(f"B-{queue}", str(log), 0.01).with_options(queue=queue))
                await eventually(lambda q=queue: any(key == f"B-{q}" for key, *_ in runs(log)), timeout=10)
                [start] = [start for key, start, *_ in runs(log) if key == f"B-{queue}"]
                assert start - pushed < 3.0, (queue, start - pushed)
        finally:
            stop(workers)


async def test_a_killed_workers_keyed_job_gives_its_place_back_once_recovered(dsn, tmp_path):
    log = tmp_path / "runs"
    async with Chancy(dsn) as app:
        await app.migrate()
        # One attempt: recovery fails it rather than handing it back ahead of the second.
        first = await app.push(keyed_tasks.stamp.job("k", str(log), 30).with_options(max_attempts=1))
        second = await app.push(keyed_tasks.stamp.job("k", str(log), 0.01))
        worker = start_worker(dsn, "process", 2)
        try:
            await eventually(lambda: _state(dsn, first.id) == "running", timeout=30)
            time.sleep(1)
            assert _state(dsn, second.id) == "pending"  # a free slot, but not a free place
            worker.kill()
            worker.wait()
            await eventually(lambda: _recovered(app, dsn, first.id), timeout=30)
            worker = start_worker(dsn, "process", 2)
            await eventually(lambda: _state(dsn, second.id) == "succeeded", timeout=30)
        finally:
            stop([worker])


def _state(dsn: str, job_id) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT state FROM chancy_jobs WHERE id = %s", (job_id,)).fetchone()[0]


async def _recovered(app: Chancy, dsn: str, job_id) -> bool:
    await recover(app)
    return _state(dsn, job_id) != "running"


async def test_a_keyed_jobs_end_wakes_the_workers_for_the_next_job_of_its_key(dsn):
    """A keyed job leaving running frees a place that other workers' claims skipped: its
    write-back announces the queue as a push does, so they claim at once instead of at
    their next poll (without it, 100 jobs over 5 keys on 3 workers took ~14 s, ~3 s with)."""
    async with Chancy(dsn) as app:
        await app.migrate()
        queue = app.queue("default")
        await queue.push([keyed_tasks.stamp.job("k", "/dev/null", 0.0), keyed_tasks.plain.job("/dev/null")])
        [keyed] = [r for r in await queue.claim("w", 2) if r.concurrency_key]
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {app.store.jobs.pushed_channel}")
            await queue.write_back("w", [Transition(keyed.id, JobState.SUCCEEDED, attempt=keyed.attempts)])
            heard = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert heard == ["default"]
