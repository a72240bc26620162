"""The raw-SQL baseline: plain psycopg on a minimal jobs table, no queue library at all.

This is the physical limit of the server and client for each access pattern; Chancy's
figures are reported as ratios to it."""

from __future__ import annotations

import asyncio
import time

import psycopg

from benchmarks.harness import FigureSpec, Run, rate
from chancy import Chancy, Job, Queue
from chancy.job import JobState, new_job_ids
from chancy.queue import Transition
from chancy.store.pg.jobs import JobSQL, push_steps
from chancy.store.pg.store import USE_GENERIC_PLANS

SCHEMA = (
    """
    CREATE TABLE raw_jobs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue text NOT NULL,
        func text NOT NULL,
        args jsonb NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        created_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz
    )
    """,
    "CREATE INDEX raw_jobs_pending ON raw_jobs (queue, id) WHERE state = 'pending'",
)
INSERT_ONE = "INSERT INTO raw_jobs (queue, func, args) VALUES (%s, %s, %s)"
INSERT_MANY = (
    "INSERT INTO raw_jobs (queue, func, args) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::jsonb[])"
)
COPY = "COPY raw_jobs (queue, func, args) FROM STDIN"
#: The job-shaped table: a copy of a job queue's real table (Chancy's, with its columns,
#: defaults, checks and partial indexes).
JOB_SHAPED = "CREATE TABLE raw_job_rows (LIKE {jobs} INCLUDING ALL)"
COPY_JOB_SHAPED = "COPY raw_job_rows (id, queue, func, args) FROM STDIN"
CLAIM = (
    "UPDATE raw_jobs SET state = 'running' WHERE id IN ("
    " SELECT id FROM raw_jobs WHERE queue = 'default' AND state = 'pending'"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
)
COMPLETE = "UPDATE raw_jobs SET state = 'succeeded', completed_at = now() WHERE id = ANY(%s)"
#: The same drain on the job-shaped table, setting what a queue's claim and completion set
#: (its pending index orders by priority, then id). Time-ordered ids, made in SQL so that
#: any Postgres 14+ can run it.
FILL_JOB_SHAPED = (
    "INSERT INTO raw_job_rows (id, queue, func, args) "
    "SELECT lpad(to_hex(i), 32, '0')::uuid, 'default', %s, jsonb_build_array(i) FROM generate_series(1, %s) i"
)
CLAIM_JOB_SHAPED = (
    "UPDATE raw_job_rows SET state = 'running', attempts = attempts + 1, started_at = now(), taken_by = 'raw'"
    " WHERE id IN (SELECT id FROM raw_job_rows WHERE queue = 'default' AND state = 'pending'"
    " ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
)
COMPLETE_JOB_SHAPED = "UPDATE raw_job_rows SET state = 'succeeded', completed_at = now() WHERE id = ANY(%s)"
FUNC = "benchmarks.tasks.noop"

SPECS = {
    "raw.insert_loop": FigureSpec("raw: single-row INSERT loop (autocommit)", "jobs/s"),
    "raw.insert_multirow": FigureSpec("raw: multi-row INSERT (one statement)", "jobs/s"),
    "raw.copy": FigureSpec("raw: COPY", "jobs/s"),
    "raw.copy_job_shaped": FigureSpec("raw: COPY into a job-shaped table", "jobs/s"),
    "raw.claim1_1conn": FigureSpec("raw: claim-1 + complete-1, 1 connection", "jobs/s"),
    "raw.claim1_10conn": FigureSpec("raw: claim-1 + complete-1, 10 connections", "jobs/s"),
    "raw.job_insert_loop": FigureSpec("raw: Chancy's own job INSERT statement, loop", "jobs/s"),
    "raw.compat_insert_loop": FigureSpec("raw: the INSERT statement of a .delay(), loop", "jobs/s"),
}


def claim100_key(count: int) -> str:
    return f"raw.claim100_{count}"


#: The raw claim-100 drain of the first drain size on the job-shaped table.
CLAIM100_JOB_SHAPED = "raw.claim100_job_shaped"


def protocol_key(count: int) -> str:
    return f"raw.chancy_statements_{count}"


def claim100_specs(run: Run) -> dict[str, FigureSpec]:
    specs = {claim100_key(n): FigureSpec(f"raw: claim-100 + complete-100 of {n:,}, 1 connection", "jobs/s")
             for n in run.sizes.drain}
    specs |= {protocol_key(n): FigureSpec(f"raw: Chancy's own write-back-and-claim of 100, loop, {n:,}", "jobs/s")
              for n in run.sizes.drain}
    n = run.sizes.drain[0]
    specs[CLAIM100_JOB_SHAPED] = FigureSpec(
        f"raw: claim-100 + complete-100 of {n:,}, 1 connection, job-shaped table", "jobs/s")
    return specs


async def _connect(dsn: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def _create(dsn: str) -> None:
    async with await _connect(dsn) as conn:
        for statement in SCHEMA:
            await conn.execute(statement)


async def _fill(dsn: str, count: int) -> None:
    async with await _connect(dsn) as conn:
        await conn.execute("INSERT INTO raw_jobs (queue, func, args) "
                           "SELECT 'default', %s, jsonb_build_array(i) FROM generate_series(1, %s) i",
                           (FUNC, count))
        await conn.execute("VACUUM ANALYZE raw_jobs")


async def create(dsn: str) -> None:
    """The minimal jobs table, in a database of the caller's."""
    await _create(dsn)


def insert_loop(dsn: str, n: int) -> float:
    """Single-row INSERTs, each its own transaction, on one sync connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for i in range(n):
            conn.execute(INSERT_ONE, ("default", FUNC, f"[{i}]"))
        return rate(n, time.perf_counter() - started)


def job_insert_loop(dsn: str, jobs: JobSQL, n: int, job: Job | None = None) -> float:
    """Chancy's own statement for a plain push (id, queue, task, arguments, and the
    notification that wakes workers), sent by plain psycopg in the INSERT loop's shape,
    its parameters and ids made before the clock: what one job row costs the server with
    none of Chancy's client code. The gap between this and the raw INSERT loop is the job
    row's; the gap between this and ``push_sync`` is Chancy's Python. Needs a migrated
    database. ``job``: the row to write instead of a plain push's (e.g. a ``.delay()``'s,
    with its Celery metadata)."""
    statement = next(push_steps(jobs, [job or Job(FUNC, args=(0,))]))
    params = [{**statement.params, "id": job_id, "args": f"[{i}]"} for i, job_id in enumerate(new_job_ids(n))]
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        started = time.perf_counter()
        for values in params:
            cur.execute(statement.query, values)
        return rate(n, time.perf_counter() - started)


async def bulk_insert(dsn: str, n: int) -> dict[str, float]:
    """One multi-row INSERT of ``n`` rows, then one COPY of ``n`` rows."""
    queues, funcs, args = ["default"] * n, [FUNC] * n, [f"[{i}]" for i in range(n)]
    async with await _connect(dsn) as conn:
        started = time.perf_counter()
        await conn.execute(INSERT_MANY, (queues, funcs, args))
        multirow = time.perf_counter() - started
        started = time.perf_counter()
        async with conn.cursor() as cur:
            async with cur.copy(COPY) as copy:
                for row in zip(queues, funcs, args):
                    await copy.write_row(row)
        copied = time.perf_counter() - started
    return {"raw.insert_multirow": rate(n, multirow), "raw.copy": rate(n, copied)}


async def copy_job_shaped(dsn: str, jobs_table: str, n: int) -> float:
    """The raw COPY of :func:`bulk_insert` into a copy of ``jobs_table``, plus the id a
    job needs (time-ordered, as a queue's ids are: random ones would scatter the primary
    key's inserts), made before the clock starts like the rest of the rows: what the server
    pays for a job row of a real queue's schema."""
    async with await _connect(dsn) as conn:
        await conn.execute(JOB_SHAPED.format(jobs=jobs_table))
        first = time.time_ns() << 16
        rows = [(f"{first + i:032x}", "default", FUNC, f"[{i}]") for i in range(n)]
        started = time.perf_counter()
        async with conn.cursor() as cur:
            async with cur.copy(COPY_JOB_SHAPED) as copy:
                for row in rows:
                    await copy.write_row(row)
        return rate(n, time.perf_counter() - started)


async def _drain(conn: psycopg.AsyncConnection, batch: int, claim: str = CLAIM, complete: str = COMPLETE) -> int:
    """Claim ``batch`` jobs (one transaction), complete them (another), until none is left."""
    done = 0
    while True:
        cur = await conn.execute(claim, (batch,))
        ids = [row[0] for row in await cur.fetchall()]
        if not ids:
            return done
        await conn.execute(complete, (ids,))
        done += len(ids)


async def _fill_job_shaped(dsn: str, count: int) -> None:
    """``count`` pending rows in a copy of a migrated queue's jobs table."""
    async with Chancy(dsn) as app:
        await app.migrate()
        jobs_table = app.names.prefix + "jobs"
    async with await _connect(dsn) as conn:
        await conn.execute(JOB_SHAPED.format(jobs=jobs_table))
        await conn.execute(FILL_JOB_SHAPED, (FUNC, count))
        await conn.execute("VACUUM ANALYZE raw_job_rows")


async def _timed_drain(dsn: str, count: int, connections: int, batch: int, *, job_shaped: bool = False) -> float:
    if job_shaped:
        await _fill_job_shaped(dsn, count)
        claim, complete = CLAIM_JOB_SHAPED, COMPLETE_JOB_SHAPED
    else:
        await _create(dsn)
        await _fill(dsn, count)
        claim, complete = CLAIM, COMPLETE
    conns = [await _connect(dsn) for _ in range(connections)]
    try:
        started = time.perf_counter()
        done = sum(await asyncio.gather(*(_drain(conn, batch, claim, complete) for conn in conns)))
        elapsed = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    if done != count:
        raise AssertionError(f"raw drain completed {done} jobs, expected {count}")
    return rate(count, elapsed)


async def chancy_statements(run: Run, count: int) -> float:
    """A drain of ``count`` jobs by Chancy's own statements, sent by plain psycopg: claim
    100, then write the 100 outcomes with the next claim of 100 (one statement, as a
    draining worker does), with no job run and none of Chancy's client code (parameters
    built from the returned rows directly, rows not mapped to records). What the claim
    protocol costs the server; a worker's drain adds its Python to this, in series on a
    machine whose cores it shares with the server."""
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            jobs = app.store.jobs
            await app.push_many([Job(FUNC, args=(i,)) for i in range(count)])
        outcome = Transition(new_job_ids(1)[0], JobState.SUCCEEDED, result_json="null", attempt=1)
        first = jobs.claim("default", "raw", 100)
        then = jobs.claim("default", "raw", 100, [outcome])
        async with await _connect(dsn) as conn:
            await conn.execute(USE_GENERIC_PLANS)  # as a worker's claim connections do
            await conn.execute("VACUUM ANALYZE " + app.names.prefix + "jobs")
            cur = conn.cursor()
            done = 0
            started = time.perf_counter()
            rows = await (await cur.execute(first.query, first.params)).fetchall()
            while rows:  # each statement writes the last batch's outcomes and claims the next
                k = len(rows)
                done += k
                params = {**then.params, "ids": [row[0] for row in rows], "states": ["succeeded"] * k,
                          "results": ["null"] * k, "errors": [None] * k, "delays": [None] * k,
                          "max_attempts": [None] * k, "attempts": [row[7] for row in rows]}
                rows = await (await cur.execute(then.query, params)).fetchall()
            elapsed = time.perf_counter() - started
            left = await (await conn.execute(
                "SELECT count(*) FROM " + app.names.prefix + "jobs WHERE state <> 'succeeded'")).fetchone()
    if done != count or left[0]:
        raise AssertionError(f"Chancy's statements drained {done} of {count} jobs, {left[0]} not succeeded")
    return rate(count, elapsed)


async def claim_one(run: Run) -> dict[str, float]:
    n = run.sizes.claim_one
    async with run.fresh_database() as dsn:
        one = await _timed_drain(dsn, n, 1, 1)
    async with run.fresh_database() as dsn:
        ten = await _timed_drain(dsn, n, 10, 1)
    return {"raw.claim1_1conn": one, "raw.claim1_10conn": ten}


async def claim100(run: Run, count: int, *, job_shaped: bool = False) -> float:
    """The batched raw drain of ``count`` jobs, in a fresh database. Measured by
    :mod:`benchmarks.drain` right before each Chancy drain it is compared with: both slow
    down as a table fills with updated rows (so sizes match), and on a shared machine this
    figure moved between 22k and 38k jobs/s within one run (so moments match)."""
    async with run.fresh_database() as dsn:
        return await _timed_drain(dsn, count, 1, 100, job_shaped=job_shaped)


async def measure(run: Run) -> None:
    """The unbatched claim baselines. The insert and batched claim baselines are measured
    by :mod:`benchmarks.enqueue` and :mod:`benchmarks.drain`, each right before the Chancy
    figure it is compared with: commit-bound loops vary by 2-5x between minutes on a
    shared disk, so only a measurement taken alongside makes a fair ratio."""
    run.log("raw-SQL baseline")
    await run.measure(SPECS, claim_one)
