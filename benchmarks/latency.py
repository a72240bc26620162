"""Pickup latency: jobs pushed at a steady rate to an idle worker, from the push's commit
(the moment the pushing call returned) to the start of the job's execution."""

from __future__ import annotations

import asyncio
import statistics
import time

import psycopg

from benchmarks.harness import FigureSpec, Run
from benchmarks.process import chancy_worker
from chancy import Chancy, Job, Queue

STAMP = "benchmarks.tasks.stamp"
SPECS = {
    "chancy.latency_p50": FigureSpec("chancy: pickup latency p50", "ms", higher_is_better=False),
    "chancy.latency_p99": FigureSpec("chancy: pickup latency p99", "ms", higher_is_better=False),
    "chancy.latency_max": FigureSpec("chancy: pickup latency max", "ms", higher_is_better=False),
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def pickup(run: Run) -> dict[str, float]:
    count = max(1, round(run.sizes.latency_seconds * run.sizes.latency_rate))
    interval = 1.0 / run.sizes.latency_rate
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            async with chancy_worker(dsn, "asyncio", 10):
                await (await app.push(Job(STAMP))).wait(timeout=30)  # the worker is up and idle
                committed: dict = {}
                start = time.monotonic()
                for i in range(count):
                    await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
                    ref = await app.push(Job(STAMP, args=(i,)))
                    committed[ref.id] = time.time()
                for ref_id in committed:
                    await app.wait(ref_id, timeout=30)
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                rows = await (await conn.execute(
                    "SELECT id, result::float8 FROM chancy_jobs WHERE id = ANY(%s)", (list(committed),))).fetchall()
    latencies = [(started - committed[job_id]) * 1000 for job_id, started in rows]
    if len(latencies) != count:
        raise AssertionError(f"{len(latencies)} of {count} latency jobs finished")
    return {"chancy.latency_p50": statistics.median(latencies),
            "chancy.latency_p99": percentile(latencies, 0.99),
            "chancy.latency_max": max(latencies)}


async def measure(run: Run) -> None:
    run.log("chancy pickup latency")
    await run.measure(SPECS, pickup)
    run.limit("chancy.latency_p50", 5.0)
    run.limit("chancy.latency_p99", 20.0)
