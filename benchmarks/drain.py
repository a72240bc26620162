"""Chancy drain: one worker process empties a queue of pre-enqueued no-op jobs; and the
same with a big table (many finished and future rows) to show the claim path ignores them,
plus the worker's memory beside a million scheduled jobs."""

from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable

import psycopg

from benchmarks import raw, tasks
from benchmarks.harness import FigureSpec, Run, rate
from benchmarks.process import chancy_worker, cpu_seconds, rss_mib, wait_until_empty
from benchmarks.raw import CLAIM100_JOB_SHAPED, claim100_key, protocol_key
from chancy import Chancy, Job, Queue

CORES = os.cpu_count() or 1
ASYNC_CONCURRENCY = 100
PUSH_CHUNK = 20_000
FILLER = "benchmarks.tasks.filler"  # never run: finished or far-future rows
WARM_UP = "benchmarks.tasks.stamp"

Prepare = Callable[[str], Awaitable[None]]


def drain_key(executor: str, count: int) -> str:
    return f"chancy.drain_{executor}_{count}"


def _drain_specs(key: str, label: str) -> dict[str, FigureSpec]:
    return {key: FigureSpec(label, "jobs/s"),
            key + "_cpu": FigureSpec(f"{label}: worker CPU", "us/job", higher_is_better=False)}


def _specs(run: Run) -> dict[str, FigureSpec]:
    specs: dict[str, FigureSpec] = {}
    for n in run.sizes.drain:
        specs |= _drain_specs(drain_key("asyncio", n), f"chancy: drain {n:,} no-op, asyncio x{ASYNC_CONCURRENCY}")
    for n in run.sizes.process_drain:
        specs |= _drain_specs(drain_key("process", n), f"chancy: drain {n:,} no-op, process x{CORES}")
    n = run.sizes.drain[0]
    specs |= _drain_specs("chancy.drain_reference", f"chancy: drain {n:,}, asyncio, empty table (reference for the next two)")
    specs |= _drain_specs("chancy.drain_scaled", f"chancy: drain {n:,}, asyncio, beside {run.sizes.finished_rows:,} "
                                                 f"finished + {run.sizes.scheduled_rows:,} future rows")
    specs |= _drain_specs("chancy.drain_analyzed_backlog",
                          f"chancy: drain {n:,}, asyncio, with a backlog's statistics ({2 * n:,} runnable rows analyzed)")
    specs["chancy.rss_empty"] = FigureSpec("chancy: idle worker RSS, empty table", "MiB", higher_is_better=False)
    specs["chancy.rss_scheduled"] = FigureSpec(
        f"chancy: idle worker RSS, {run.sizes.memory_rows:,} scheduled jobs", "MiB", higher_is_better=False)
    return specs


def _filler_ids(first: int) -> str:
    """SQL for the id of filler row ``i`` (of ``generate_series``): time-ordered and older
    than any job pushed later, as a queue's finished and scheduled rows are (random ones
    would put every later job's key in the middle of a full primary-key index, a cost no
    native queue's table has)."""
    return f"lpad(to_hex({int(first)}::bigint + i), 32, '0')::uuid"


async def fill(dsn: str, finished: int, scheduled: int) -> None:
    """Rows the claim path must never look at: finished ones and ones due in a day."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO chancy_jobs (id, queue, func, state, attempts, started_at, completed_at) "
            f"SELECT {_filler_ids(0)}, 'default', %s, 'succeeded', 1, now(), now() FROM generate_series(1, %s) i",
            (FILLER, finished))
        await conn.execute(
            f"INSERT INTO chancy_jobs (id, queue, func, state, scheduled_at) "
            f"SELECT {_filler_ids(finished)}, 'default', %s, 'scheduled', now() + interval '1 day' "
            f"FROM generate_series(1, %s) i", (FILLER, scheduled))
        await conn.execute("VACUUM ANALYZE chancy_jobs")


async def analyzed_backlog(dsn: str, rows: int) -> None:
    """The statistics a burst leaves behind: ``rows`` runnable jobs analyzed (as autovacuum
    does while a backlog waits), then gone. Postgres plans with them until it analyzes
    again; a plan sized from them once read the whole table on every claim."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"INSERT INTO chancy_jobs (id, queue, func) "
                           f"SELECT {_filler_ids(0)}, 'default', %s FROM generate_series(1, %s) i", (FILLER, rows))
        await conn.execute("ANALYZE chancy_jobs")
        await conn.execute("DELETE FROM chancy_jobs WHERE func = %s", (FILLER,))


LIVE_COUNT = (
    "SELECT (SELECT count(*) FROM chancy_jobs WHERE queue = 'default' AND state = 'pending')"
    " + (SELECT count(*) FROM chancy_jobs WHERE state = 'running')"
)
# Every measured job ran exactly once and succeeded; first claim to last outcome written.
DRAIN_STATS = (
    "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1),"
    " extract(epoch FROM max(completed_at) - min(started_at))::float8"
    " FROM chancy_jobs WHERE func = %s"
)


async def timed_drain(run: Run, executor: str, concurrency: int, count: int,
                      prepare: Prepare | None = None,
                      make_job: Callable[[str, int], Job] = lambda func, i: Job(func, args=(i,))) -> tuple[float, float]:
    """Jobs/s from the first claim to the last outcome written (database clock), and the
    worker's CPU microseconds per job (less sensitive than wall time to a busy machine).

    The worker starts first and runs one warm-up job; then all ``count`` jobs are
    committed in one transaction, so the worker finds them all enqueued at once (job
    ``i`` is ``make_job(func, i)``)."""
    func = f"benchmarks.tasks.{'noop' if executor == 'asyncio' else 'noop_sync'}"
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            if prepare is not None:
                await prepare(dsn)
            async with chancy_worker(dsn, executor, concurrency) as proc:
                await (await app.push(Job(WARM_UP))).wait(timeout=60)
                cpu_before = cpu_seconds(proc)
                async with app.store.connection() as conn, conn.transaction():
                    for start in range(0, count, PUSH_CHUNK):
                        end = min(count, start + PUSH_CHUNK)
                        await app.push_many([make_job(func, i) for i in range(start, end)], connection=conn)
                await wait_until_empty(dsn, LIVE_COUNT, proc)
                cpu = cpu_seconds(proc) - cpu_before
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            total, clean, seconds = await (await conn.execute(DRAIN_STATS, (func,))).fetchone()
    if total != count or clean != count:
        raise AssertionError(f"drain of {count}: {total} rows, {clean} succeeded at their first attempt")
    return rate(count, seconds), cpu / count * 1e6


async def idle_rss(run: Run, scheduled: int) -> float:
    """The RSS of an idle asyncio worker after it has polled a few times."""
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
        await fill(dsn, 0, scheduled)
        async with chancy_worker(dsn, "asyncio", ASYNC_CONCURRENCY) as proc:
            await asyncio.sleep(run.sizes.memory_settle)
            return rss_mib(proc)


async def measure(run: Run) -> None:
    run.log("chancy drain")
    specs = _specs(run)

    specs |= raw.claim100_specs(run)
    first = run.sizes.drain[0]

    def drain(executor: str, concurrency: int, n: int, key: str | None = None, prepare: Prepare | None = None,
              *, with_baselines: bool = False):
        async def scenario(run: Run) -> dict[str, float]:
            figures = {}
            if with_baselines:  # the raw drains it is compared with, right before it
                figures[claim100_key(n)] = await raw.claim100(run, n)
                figures[protocol_key(n)] = await raw.chancy_statements(run, n)
                if n == first:
                    figures[CLAIM100_JOB_SHAPED] = await raw.claim100(run, n, job_shaped=True)
            name = key or drain_key(executor, n)
            jobs_per_second, cpu_per_job = await timed_drain(run, executor, concurrency, n, prepare)
            return figures | {name: jobs_per_second, name + "_cpu": cpu_per_job}
        return scenario

    for n in run.sizes.drain:
        await run.measure(specs, drain("asyncio", ASYNC_CONCURRENCY, n, with_baselines=True))
    for n in run.sizes.process_drain:
        await run.measure(specs, drain("process", CORES, n))
    sizes = run.sizes

    async def table_scale(run: Run) -> dict[str, float]:
        """The same drain on an empty table, beside a big one and with a backlog's
        statistics, one after the other: compared with a drain of another minute, the
        big-table ratio moved between 0.66 and 1.17 with the host's speed alone."""
        empty = await drain("asyncio", ASYNC_CONCURRENCY, first, "chancy.drain_reference")(run)
        big = await drain("asyncio", ASYNC_CONCURRENCY, first, "chancy.drain_scaled",
                          lambda dsn: fill(dsn, sizes.finished_rows, sizes.scheduled_rows))(run)
        stats = await drain("asyncio", ASYNC_CONCURRENCY, first, "chancy.drain_analyzed_backlog",
                            lambda dsn: analyzed_backlog(dsn, 2 * first))(run)
        return empty | big | stats

    await run.measure(specs, table_scale)

    async def memory(run: Run) -> dict[str, float]:
        return {"chancy.rss_empty": await idle_rss(run, 0),
                "chancy.rss_scheduled": await idle_rss(run, sizes.memory_rows)}

    await run.measure(specs, memory)
    for n in run.sizes.drain:
        run.ratio(f"drain {n:,} asyncio / raw claim-100 of {n:,}", drain_key("asyncio", n), claim100_key(n),
                  at_least=0.8)
    for n in run.sizes.drain:  # the targets above split: the protocol's share, the worker's share
        run.ratio(f"Chancy's own statements, {n:,} / raw claim-100 of {n:,}", protocol_key(n), claim100_key(n))
        run.ratio(f"drain {n:,} asyncio / Chancy's own statements, {n:,}", drain_key("asyncio", n), protocol_key(n))
    run.ratio(f"drain {first:,} asyncio / raw claim-100 of {first:,} on a job-shaped table",
              drain_key("asyncio", first), CLAIM100_JOB_SHAPED)
    for n in set(run.sizes.process_drain) & set(run.sizes.drain):
        run.ratio(f"drain {n:,} process / raw claim-100 of {n:,}", drain_key("process", n), claim100_key(n))
    run.ratio("drain beside a big table / drain on an empty one", "chancy.drain_scaled",
              "chancy.drain_reference", at_least=0.95)
    run.ratio("drain with a backlog's statistics / drain on an empty table", "chancy.drain_analyzed_backlog",
              "chancy.drain_reference", at_least=0.95)
    run.ratio("idle RSS with scheduled jobs / with none", "chancy.rss_scheduled", "chancy.rss_empty",
              at_most=1.05)
