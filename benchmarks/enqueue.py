"""Chancy enqueue: one job per call (sync and async), and in bulk."""

from __future__ import annotations

import time

from benchmarks import raw, tasks
from benchmarks.harness import FigureSpec, Run, rate
from benchmarks.process import concurrent_pushes
from chancy import Chancy, Queue
from chancy.compat import Celery
from chancy.compat.job_rows import job_for

#: Client processes of the concurrent one-at-a-time figures (a web app's workers pushing).
CLIENTS = 8

SPECS = {
    **{key: spec for key, spec in raw.SPECS.items()
       if key in ("raw.insert_loop", "raw.job_insert_loop", "raw.compat_insert_loop", "raw.insert_multirow", "raw.copy",
                  "raw.copy_job_shaped")},
    "chancy.delay": FigureSpec("chancy.compat: Celery task .delay() loop", "jobs/s"),
    "chancy.delay_cpu": FigureSpec("chancy.compat: Celery task .delay(): client CPU", "us/call",
                                   higher_is_better=False),
    "chancy.push_sync": FigureSpec("chancy: task.push_sync() loop", "jobs/s"),
    "chancy.push_async": FigureSpec("chancy: await task.push() loop", "jobs/s"),
    "raw.insert_loop_concurrent": FigureSpec(f"raw: single-row INSERT loops, {CLIENTS} processes", "jobs/s"),
    "chancy.push_sync_concurrent": FigureSpec(f"chancy: task.push_sync() loops, {CLIENTS} processes", "jobs/s"),
    "chancy.push_many": FigureSpec("chancy: await push_many(jobs)", "jobs/s"),
    "chancy.task_push_many": FigureSpec("chancy: await task.push_many(calls)", "jobs/s"),
}


async def one_at_a_time(run: Run) -> dict[str, float]:
    """Celery-style ``.delay()``, ``push_sync`` and ``await push``, back to back on one
    database, bracketed by the raw INSERT loop and, inside that, by Chancy's own INSERT
    statement sent by plain psycopg (each figure the mean of before and after, so neither
    side gains from a disk that speeds up or slows down meanwhile)."""
    n = run.sizes.insert_loop
    async with run.fresh_database() as dsn:
        await raw.create(dsn)
        raw_before = raw.insert_loop(dsn, n)
        delay_rate, delay_cpu, compat_insert_rate = await celery_delay(dsn, n)
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            job_insert_before = raw.job_insert_loop(dsn, app.store.jobs, n)
            task = app.task(tasks.noop)
            with app:
                task.push_sync(-1)  # open the pool outside the clock, as a running app has
                started = time.perf_counter()
                for i in range(n):
                    task.push_sync(i)
                sync_rate = rate(n, time.perf_counter() - started)
            await task.push(-1)
            started = time.perf_counter()
            for i in range(n):
                await task.push(i)
            async_rate = rate(n, time.perf_counter() - started)
            job_insert_rate = (job_insert_before + raw.job_insert_loop(dsn, app.store.jobs, n)) / 2
        raw_rate = (raw_before + raw.insert_loop(dsn, n)) / 2
    return {"raw.insert_loop": raw_rate, "raw.job_insert_loop": job_insert_rate, "chancy.delay": delay_rate,
            "raw.compat_insert_loop": compat_insert_rate, "chancy.delay_cpu": delay_cpu,
            "chancy.push_sync": sync_rate, "chancy.push_async": async_rate}


async def concurrent(run: Run) -> dict[str, float]:
    """``CLIENTS`` processes pushing one job at a time each, as a web app's processes do,
    bracketed by as many processes running the raw INSERT loop. Each push commits on its
    own. On a machine whose cores the clients share with Postgres, the clients' own CPU
    bounds this figure (see "Findings" in benchmarks/README.md)."""
    n = run.sizes.insert_loop
    async with run.fresh_database() as dsn:
        await raw.create(dsn)
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
        raw_before = concurrent_pushes(dsn, "raw", CLIENTS, n)
        chancy_rate = concurrent_pushes(dsn, "chancy", CLIENTS, n)
        raw_rate = (raw_before + concurrent_pushes(dsn, "raw", CLIENTS, n)) / 2
    return {"raw.insert_loop_concurrent": raw_rate, "chancy.push_sync_concurrent": chancy_rate}


async def celery_delay(dsn: str, n: int) -> tuple[float, float, float]:
    """``.delay()`` through the Celery-compatible layer, as a migrated Celery app calls it
    (this also creates Chancy's tables): calls per second and the client's CPU µs per call
    (what removing Python per call shows, whatever the shared disk's commits do to the
    wall clock); bracketed by the row it writes (Celery metadata included) sent by plain
    psycopg: the statement's share of the gap to the raw loop, the rest being the client's."""
    celery = Celery("benchmarks", broker=dsn, set_as_current=False)
    task = celery.task(name="benchmarks.tasks.noop_sync")(tasks.noop_sync)
    await celery.chancy.migrate()
    try:
        task.delay(-1)
        row = job_for(celery, task.signature((0,), {}))
        statement_before = raw.job_insert_loop(dsn, celery.chancy.store.jobs, n, row)
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(n):
            task.delay(i)
        delay_rate = rate(n, time.perf_counter() - started)
        cpu_per_call = (time.process_time() - cpu_started) / n * 1e6
        statement_rate = (statement_before + raw.job_insert_loop(dsn, celery.chancy.store.jobs, n, row)) / 2
        return delay_rate, cpu_per_call, statement_rate
    finally:
        await celery.chancy.close()


async def bulk(run: Run) -> dict[str, float]:
    """Multi-row INSERT and COPY of the raw table, COPY into a job-shaped table, then
    ``push_many``, on one database."""
    n = run.sizes.bulk
    async with run.fresh_database() as dsn:
        await raw.create(dsn)
        figures = await raw.bulk_insert(dsn, n)
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            figures["raw.copy_job_shaped"] = await raw.copy_job_shaped(dsn, app.names.prefix + "jobs", n)
            task = app.task(tasks.noop)
            await task.push(-1)
            started = time.perf_counter()  # building the jobs is part of what a caller pays
            await app.push_many([task.job(i) for i in range(n)])
            figures["chancy.push_many"] = rate(n, time.perf_counter() - started)
            started = time.perf_counter()  # the bulk API: one call per item, no Job each
            await task.push_many((i,) for i in range(n))
            figures["chancy.task_push_many"] = rate(n, time.perf_counter() - started)
            return figures


async def measure(run: Run) -> None:
    run.log("chancy enqueue")
    await run.measure(SPECS, one_at_a_time)
    await run.measure(SPECS, concurrent)
    await run.measure(SPECS, bulk)
    run.ratio(".delay() (compat) / raw INSERT loop", "chancy.delay", "raw.insert_loop", at_least=0.8)
    run.ratio("push_sync / raw INSERT loop", "chancy.push_sync", "raw.insert_loop", at_least=0.8)
    run.ratio("push_async / raw INSERT loop", "chancy.push_async", "raw.insert_loop")
    # Each target above split in two: the job row's share (Chancy's own INSERT with no
    # Chancy code around it) and the client code's share.
    run.ratio("Chancy's own INSERT statement loop / raw INSERT loop", "raw.job_insert_loop", "raw.insert_loop")
    run.ratio(".delay() (compat) / Chancy's own INSERT statement loop", "chancy.delay", "raw.job_insert_loop")
    run.ratio("push_sync / Chancy's own INSERT statement loop", "chancy.push_sync", "raw.job_insert_loop")
    run.ratio(".delay()'s own INSERT statement loop / raw INSERT loop", "raw.compat_insert_loop", "raw.insert_loop")
    run.ratio(".delay() (compat) / its own INSERT statement loop", "chancy.delay", "raw.compat_insert_loop")
    run.ratio(f"push_sync / raw INSERT loop, {CLIENTS} processes each", "chancy.push_sync_concurrent",
              "raw.insert_loop_concurrent")
    run.ratio("push_many / raw COPY", "chancy.push_many", "raw.copy", at_least=0.8)
    run.ratio("task.push_many / raw COPY", "chancy.task_push_many", "raw.copy", at_least=0.8)
    run.ratio("push_many / raw multi-row INSERT", "chancy.push_many", "raw.insert_multirow")
    run.ratio("push_many / raw COPY into a job-shaped table", "chancy.push_many", "raw.copy_job_shaped")
    run.ratio("task.push_many / raw COPY into a job-shaped table", "chancy.task_push_many", "raw.copy_job_shaped")
    run.ratio("raw COPY into a job-shaped table / raw COPY", "raw.copy_job_shaped", "raw.copy")
