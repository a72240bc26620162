"""Sizing: how throughput, connections and database CPU grow with the number of worker
processes on one Postgres (the figures behind docs/scaling.md's sizing guide).

For each fleet size (1, 2, 4, 8 worker processes, each ``chancy``'s asyncio executor x100
on one queue), the same number of no-op jobs is committed at once and drained. Figures per
fleet: jobs/s (first claim to last outcome, database clock), the Postgres backends the
database had open at the peak (sampled while draining), and the CPU µs per job of the
workers and of their Postgres backends (the backends' processes, read with ``psutil``:
only when the server runs on this machine). No-op jobs make the database the bottleneck:
what a fleet adds beyond its first worker is what one Postgres can still give."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import psutil
import psycopg

from benchmarks.drain import LIVE_COUNT, PUSH_CHUNK, WARM_UP
from benchmarks.harness import FigureSpec, Run, rate
from benchmarks.process import chancy_worker, cpu_seconds
from chancy import Chancy, Job, Queue

CONCURRENCY = 100
FUNC = "benchmarks.tasks.noop"
STATS = ("SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1),"
         " extract(epoch FROM max(completed_at) - min(started_at))::float8 FROM chancy_jobs WHERE func = %s")
BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def key(workers: int, figure: str) -> str:
    return f"scale.w{workers}_{figure}"


def _specs(run: Run) -> dict[str, FigureSpec]:
    specs: dict[str, FigureSpec] = {}
    for n in run.sizes.scale_workers:
        label = f"{n} worker process{'es' if n > 1 else ''} x{CONCURRENCY}: drain {run.sizes.scale_jobs:,} no-op"
        specs[key(n, "rate")] = FigureSpec(label, "jobs/s")
        specs[key(n, "backends")] = FigureSpec(f"{label}: Postgres backends at the peak", "connections",
                                               higher_is_better=False)
        specs[key(n, "worker_cpu")] = FigureSpec(f"{label}: workers' CPU", "us/job", higher_is_better=False)
        specs[key(n, "db_cpu")] = FigureSpec(f"{label}: Postgres backends' CPU", "us/job", higher_is_better=False)
    return specs


class BackendWatch:
    """The database's backends while a drain runs: the most seen at once, and the CPU their
    processes used (those of this machine; 0 when the server is elsewhere)."""

    def __init__(self) -> None:
        self.peak = 0
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float | None:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
        return None

    def sample(self, pids: list[int]) -> None:
        self.peak = max(self.peak, len(pids))
        for pid in pids:
            cpu = self._cpu(pid)
            if cpu is not None:
                self._start.setdefault(pid, cpu)
                self._last[pid] = cpu

    @property
    def cpu(self) -> float:
        return sum(self._last[pid] - self._start[pid] for pid in self._last)


@contextlib.asynccontextmanager
async def fleet(dsn: str, workers: int) -> AsyncIterator[list]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(chancy_worker(dsn, "asyncio", CONCURRENCY)) for _ in range(workers)]


async def drain_with(run: Run, workers: int) -> dict[str, float]:
    count = run.sizes.scale_jobs
    watch = BackendWatch()
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            async with fleet(dsn, workers) as procs:
                for _ in procs:  # every worker has connected and run something
                    await (await app.push(Job(WARM_UP))).wait(timeout=60)
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
                    watch.sample([row[0] for row in await (await watcher.execute(BACKENDS)).fetchall()])
                    cpu_before = sum(cpu_seconds(p) for p in procs)
                    async with app.store.connection() as conn, conn.transaction():
                        for start in range(0, count, PUSH_CHUNK):
                            end = min(count, start + PUSH_CHUNK)
                            await app.push_many([Job(FUNC, args=(i,)) for i in range(start, end)], connection=conn)
                    deadline = time.monotonic() + 300
                    while (await (await watcher.execute(LIVE_COUNT)).fetchone())[0]:
                        watch.sample([row[0] for row in await (await watcher.execute(BACKENDS)).fetchall()])
                        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                            raise RuntimeError(f"{workers} workers did not drain {count} jobs")
                        await asyncio.sleep(0.1)
                    watch.sample([row[0] for row in await (await watcher.execute(BACKENDS)).fetchall()])
                    worker_cpu = sum(cpu_seconds(p) for p in procs) - cpu_before
                    total, clean, seconds = await (await watcher.execute(STATS, (FUNC,))).fetchone()
    if total != count or clean != count:
        raise AssertionError(f"{workers} workers: {total} rows, {clean} succeeded at their first attempt")
    return {key(workers, "rate"): rate(count, seconds), key(workers, "backends"): watch.peak,
            key(workers, "worker_cpu"): worker_cpu / count * 1e6, key(workers, "db_cpu"): watch.cpu / count * 1e6}


async def measure(run: Run) -> None:
    run.log("sizing: fleets of worker processes on one Postgres")
    specs = _specs(run)

    async def fleets(run: Run) -> dict[str, float]:
        """Every fleet size in one repetition, so their ratios compare the same minutes."""
        figures: dict[str, float] = {}
        for workers in run.sizes.scale_workers:
            figures |= await drain_with(run, workers)
        return figures

    await run.measure(specs, fleets)
    first = run.sizes.scale_workers[0]
    for workers in run.sizes.scale_workers[1:]:
        run.ratio(f"drain, {workers} worker processes / {first}", key(workers, "rate"), key(first, "rate"))
