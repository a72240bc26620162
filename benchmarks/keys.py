"""Per-key concurrency (issue 24): the same no-op jobs drained plain and spread over 1,000
concurrency keys with a limit of 1 each, one after the other in each repetition, so each
ratio compares the same minutes. Two figures each way: a worker's drain (asyncio x100, as
the drain part's, first claim to last outcome on the database clock, plus the worker's CPU
per job), and the store's claim loop alone (write-back-and-claim 100 at a time on one
connection, as a draining worker sends it, no executor: the claim statement's share).
Job ``i`` has key ``i mod 1000``, so keys interleave in push order. Also the cost of a busy
key's backlog ahead (no fairness yet): one claim that finds another key's job behind the
same number of jobs of one key whose place is taken."""

from __future__ import annotations

import time
from typing import Callable

from benchmarks.drain import ASYNC_CONCURRENCY, timed_drain
from benchmarks.harness import FigureSpec, Run, rate
from chancy import Chancy, Job, JobState, Queue
from chancy.queue import Transition

KEYS = 1000
CLAIM = 100
FUNC = "benchmarks.tasks.noop"

MakeJob = Callable[[str, int], Job]


def plain_job(func: str, i: int) -> Job:
    return Job(func, args=(i,))


def keyed_job(func: str, i: int) -> Job:
    return Job(func, args=(i,), concurrency_key=f"k{i % KEYS}", concurrency=1)


def _specs(n: int) -> dict[str, FigureSpec]:
    specs = {}
    for way, label in (("plain", "no key"), ("keyed", f"{KEYS:,} keys, limit 1")):
        drain = f"keys.drain_{way}"
        specs[drain] = FigureSpec(f"chancy: drain {n:,} no-op, asyncio x{ASYNC_CONCURRENCY}, {label}", "jobs/s")
        specs[drain + "_cpu"] = FigureSpec(f"chancy: drain {n:,}, {label}: worker CPU", "us/job",
                                           higher_is_better=False)
        specs[f"keys.claim_{way}"] = FigureSpec(f"chancy: claim loop {n:,} ({CLAIM} per statement), {label}",
                                                "jobs/s")
        specs[f"keys.claim_{way}_cpu"] = FigureSpec(f"chancy: claim loop {n:,}, {label}: client CPU", "us/job",
                                                    higher_is_better=False)
    specs["keys.behind_backlog"] = FigureSpec(
        f"chancy: claim of a job behind a busy key's {n:,}-job backlog", "ms", higher_is_better=False)
    return specs


async def behind_backlog(run: Run, count: int) -> float:
    """Milliseconds of one claim that takes key B's only job from behind ``count`` jobs of
    key A, A's place taken (each claim reads past A's rows: the cost fairness must cut)."""
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            await app.push_many([Job(FUNC, args=(i,), concurrency_key="A") for i in range(count)])
            async with app.store.connection() as conn:
                await conn.execute("ANALYZE chancy_jobs")
            queue = app.queue("default")
            if len(await queue.claim("bench", CLAIM)) != 1:
                raise AssertionError("key A's limit of 1 did not hold")
            behind = await app.push(Job(FUNC, concurrency_key="B"))
            started = time.perf_counter()
            claimed = await queue.claim("bench", CLAIM)
            elapsed = time.perf_counter() - started
    if [r.id for r in claimed] != [behind.id]:
        raise AssertionError(f"the claim behind the backlog took {claimed}")
    return elapsed * 1000


async def claim_loop(run: Run, count: int, make_job: MakeJob) -> tuple[float, float]:
    """Jobs/s of the store's write-back-and-claim loop over ``count`` pushed jobs, and the
    client's CPU µs per job; each job is checked to have succeeded at its first attempt."""
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default")]) as app:
            await app.migrate()
            await app.push_many([make_job(FUNC, i) for i in range(count)])
            queue = app.queue("default")
            done = 0
            cpu, started = time.process_time(), time.perf_counter()
            claimed = await queue.claim("bench", CLAIM)
            while claimed:
                done += len(claimed)
                outcomes = [Transition(r.id, JobState.SUCCEEDED, attempt=r.attempts) for r in claimed]
                claimed = await queue.write_back_and_claim("bench", outcomes, CLAIM)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            async with app.store.connection() as conn:
                clean = await (await conn.execute(
                    "SELECT count(*) FROM chancy_jobs WHERE state = 'succeeded' AND attempts = 1")).fetchone()
    if done != count or clean[0] != count:
        raise AssertionError(f"claim loop of {count}: {done} claimed, {clean[0]} succeeded at their first attempt")
    return rate(count, seconds), cpu / count * 1e6


async def measure(run: Run) -> None:
    run.log("per-key concurrency")
    n = run.sizes.drain[0]
    specs = _specs(n)

    async def scenario(run: Run) -> dict[str, float]:
        figures: dict[str, float] = {}
        for way, make_job in (("plain", plain_job), ("keyed", keyed_job)):
            jobs_per_second, cpu = await timed_drain(run, "asyncio", ASYNC_CONCURRENCY, n, make_job=make_job)
            figures |= {f"keys.drain_{way}": jobs_per_second, f"keys.drain_{way}_cpu": cpu}
        for way, make_job in (("plain", plain_job), ("keyed", keyed_job)):
            jobs_per_second, cpu = await claim_loop(run, n, make_job)
            figures |= {f"keys.claim_{way}": jobs_per_second, f"keys.claim_{way}_cpu": cpu}
        figures["keys.behind_backlog"] = await behind_backlog(run, n)
        return figures

    await run.measure(specs, scenario)
    run.ratio(f"drain {n:,}, {KEYS:,} keys limit 1 / no key", "keys.drain_keyed", "keys.drain_plain", at_least=0.7)
    run.ratio(f"claim loop {n:,}, {KEYS:,} keys limit 1 / no key", "keys.claim_keyed", "keys.claim_plain",
              at_least=0.7)
