"""Per-key concurrency (issue 24): the same no-op jobs drained plain and spread over 1,000
concurrency keys with a limit of 1 each, one after the other in each repetition, so each
ratio compares the same minutes. Two figures each way: a worker's drain (asyncio x100, as
the drain part's, first claim to last outcome on the database clock, plus the worker's CPU
per job), and the store's claim loop alone (write-back-and-claim 100 at a time on one
connection, as a draining worker sends it, no executor: the claim statement's share).
Job ``i`` has key ``i mod 1000``, so keys interleave in push order. Also the pickup of a
tenant's one job behind another tenant's backlog of 100,000 jobs (issue 24's target: under
100 ms with fairness on): one claim that finds key B's job behind the backlog of key A,
A's place taken (the keyed claim goes key by key past it), in a plain queue and in a fair
one; and, in a fair queue, behind a burst of a key that is free (10,000 places), which
fairness alone puts B's job ahead of."""

from __future__ import annotations

import time
from typing import Callable

from benchmarks.drain import ASYNC_CONCURRENCY, timed_drain
from benchmarks.harness import FigureSpec, Run, rate
from chancy import Chancy, Job, JobState, Queue
from chancy.queue import Transition

KEYS = 1000
CLAIM = 100
#: The other tenant's backlog of the pickup figures.
BACKLOG = 100_000
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
    specs["keys.claim_fair"] = FigureSpec(f"chancy: claim loop {n:,} ({CLAIM} per statement), {KEYS:,} keys, "
                                          "limit 1, fair queue", "jobs/s")
    specs["keys.claim_fair_cpu"] = FigureSpec(f"chancy: claim loop {n:,}, {KEYS:,} keys, limit 1, fair queue: "
                                              "client CPU", "us/job", higher_is_better=False)
    for figure, label in BEHIND.items():
        specs[figure] = FigureSpec(f"chancy: pickup of a job behind {label}", "ms", higher_is_better=False)
    return specs


#: The pickup figures: (its queue, the limit of the backlog's key) by figure key, and labels.
PICKUPS = {"keys.behind_backlog": ("default", 1), "keys.behind_backlog_fair": ("fair", 1),
           "keys.behind_burst_fair": ("burst", BACKLOG)}
BEHIND = {"keys.behind_backlog": f"a full key's {BACKLOG:,}-job backlog",
          "keys.behind_backlog_fair": f"a full key's {BACKLOG:,}-job backlog, fair queue",
          "keys.behind_burst_fair": f"a free key's {BACKLOG:,}-job burst, fair queue"}


async def behind_backlog(run: Run) -> dict[str, float]:
    """Milliseconds of one claim that takes key B's only job from behind :data:`BACKLOG`
    jobs of key A, per :data:`PICKUPS` case: A full (its place taken) in a plain and a fair
    queue, or A free with room for all of its burst in a fair queue (where only the turns
    between keys put B's job in the claim). Each queue claimed once before (its claims
    are keyed from then on, as a busy queue's are)."""
    figures = {}
    async with run.fresh_database() as dsn:
        queues = [Queue("default"), Queue("fair", fair_keys=True), Queue("burst", fair_keys=True)]
        async with Chancy(dsn, plugins=queues) as app:
            await app.migrate()
            for name, limit in PICKUPS.values():
                template = Job(FUNC, concurrency_key="A", concurrency=limit, queue=name)
                await app.queue(name).push_calls(template, [(i,) for i in range(BACKLOG)])
            async with app.store.connection() as conn:
                await conn.execute("ANALYZE chancy_jobs")
            for figure, (name, limit) in PICKUPS.items():
                queue = app.queue(name)
                if len(await queue.claim("bench", CLAIM if limit == 1 else 1)) != 1:
                    raise AssertionError(f"{figure}: the first claim did not take one job of key A")
                [behind] = await queue.push([Job(FUNC, concurrency_key="B", queue=name)])
                started = time.perf_counter()
                claimed = await queue.claim("bench", CLAIM if limit == 1 else 2)
                figures[figure] = (time.perf_counter() - started) * 1000
                if behind not in [r.id for r in claimed]:
                    raise AssertionError(f"{figure}: the claim behind the backlog took {claimed}")
    return figures


async def claim_loop(run: Run, count: int, make_job: MakeJob, fair: bool = False) -> tuple[float, float]:
    """Jobs/s of the store's write-back-and-claim loop over ``count`` pushed jobs, and the
    client's CPU µs per job; each job is checked to have succeeded at its first attempt.
    ``fair``: in a fair queue (its keyed claims go key by key, every key each claim)."""
    async with run.fresh_database() as dsn:
        async with Chancy(dsn, plugins=[Queue("default", fair_keys=fair)]) as app:
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
        for way, make_job, fair in (("plain", plain_job, False), ("keyed", keyed_job, False),
                                    ("fair", keyed_job, True)):
            jobs_per_second, cpu = await claim_loop(run, n, make_job, fair)
            figures |= {f"keys.claim_{way}": jobs_per_second, f"keys.claim_{way}_cpu": cpu}
        figures |= await behind_backlog(run)
        return figures

    await run.measure(specs, scenario)
    run.ratio(f"drain {n:,}, {KEYS:,} keys limit 1 / no key", "keys.drain_keyed", "keys.drain_plain", at_least=0.7)
    run.ratio(f"claim loop {n:,}, {KEYS:,} keys limit 1 / no key", "keys.claim_keyed", "keys.claim_plain",
              at_least=0.7)
    run.ratio(f"claim loop {n:,}, {KEYS:,} keys limit 1, fair queue / no key", "keys.claim_fair", "keys.claim_plain")
    run.limit("keys.behind_backlog_fair", 100)
