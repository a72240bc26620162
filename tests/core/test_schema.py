"""Migrations, table prefixes and the claim query's plan at depth."""

import asyncio
import re
import uuid

import core_tasks
import pytest
from chancy import Chancy, Job, JobState, Queue
from chancy.store.pg.migrations import LATEST_VERSION
from chancy.store.pg.cluster import ClusterSQL
from chancy.queue import Transition
from chancy.testing import running_worker


async def test_migrate_is_idempotent_and_recorded(dsn):
    app = Chancy(dsn, plugins=[Queue("default")])
    try:
        assert await app.schema_version() == 0
        assert await app.migrate() == list(range(1, LATEST_VERSION + 1))
        assert await app.migrate() == []
        assert await app.schema_version() == LATEST_VERSION
    finally:
        await app.close()


async def test_concurrent_migrations_apply_once(dsn):
    apps = [Chancy(dsn, plugins=[Queue("default")]) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(a.migrate() for a in apps))
        assert sorted(len(a) for a in applied) == [0, 0, 0, LATEST_VERSION]
    finally:
        for a in apps:
            await a.close()


async def test_prefixes_isolate_apps_in_one_database(dsn):
    first = Chancy(dsn, plugins=[Queue("default")], prefix="first_")
    second = Chancy(dsn, plugins=[Queue("default")], prefix="second_")
    try:
        await first.migrate()
        await second.migrate()
        ref = await first.push(core_tasks.add, 1, 1)
        assert await second.get_job(ref.id) is None
        async with running_worker(second):
            await asyncio.sleep(0.3)
        assert (await first.get_job(ref.id)).state is JobState.PENDING
        async with running_worker(first):
            assert (await ref.wait(timeout=10)).result == 2
    finally:
        await first.close()
        await second.close()


async def test_claim_reads_only_runnable_rows_at_depth(app):
    """With many finished and future rows, the claim must use the partial indexes and
    never scan the table (the planner trap noted in ARCHITECTURE.md)."""
    async with app.store.connection() as conn:
        await conn.execute(
            """
            INSERT INTO chancy_jobs (id, queue, func, state, completed_at, scheduled_at)
            SELECT gen_random_uuid(), 'default', 'x', 'succeeded', now(), now()
            FROM generate_series(1, 20000)
            """
        )
        await conn.execute(
            """
            INSERT INTO chancy_jobs (id, queue, func, state, scheduled_at)
            SELECT gen_random_uuid(), 'default', 'x', 'scheduled', now() + interval '1 day'
            FROM generate_series(1, 5000)
            """
        )
        await conn.execute("ANALYZE chancy_jobs")
        statement = app.store.jobs.claim("default", "explain-worker", 10)
        plan = await _plan(conn, b"ANALYZE " + statement.query, statement.params)
    assert "Seq Scan" not in plan, plan
    assert "chancy_jobs_pending" in plan and "chancy_jobs_scheduled" in plan, plan
    # The scheduled index is read only up to now(): the 5,000 future rows are not visited.
    assert "rows=0" in plan.split("chancy_jobs_scheduled")[1].split("\n")[0], plan


def _generic(query: bytes) -> bytes:
    """``query`` with its named placeholders as ``$n``, for ``EXPLAIN (GENERIC_PLAN)``: the
    plan a prepared statement gets when its parameters' values are unknown, as the claim
    pool's connections always use (``plan_cache_mode = force_generic_plan``)."""
    numbers: dict[bytes, int] = {}
    return re.sub(rb"%\((\w+)\)[sb]", lambda m: b"$%d" % numbers.setdefault(m.group(1), len(numbers) + 1), query)


async def _plan(conn, query: bytes, params=None) -> str:
    """``EXPLAIN query``, rolled back (``EXPLAIN ANALYZE`` of a claim really claims)."""
    async with conn.transaction(force_rollback=True):
        cur = await conn.execute(b"EXPLAIN " + query, params)
        return "\n".join(row[0] for row in await cur.fetchall())


SHAPES = {
    "runnable": "INSERT INTO chancy_jobs (id, queue, func) SELECT gen_random_uuid(), 'default', 'x' "
                "FROM generate_series(1, 10000)",
    "running": "INSERT INTO chancy_jobs (id, queue, func, state, taken_by, attempts, started_at) "
               "SELECT gen_random_uuid(), 'default', 'x', 'running', 'gone', 1, now() FROM generate_series(1, 10000)",
    "finished": "INSERT INTO chancy_jobs (id, queue, func, state, completed_at) "
                "SELECT gen_random_uuid(), 'default', 'x', 'succeeded', now() - interval '2 days' "
                "FROM generate_series(1, 10000)",
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_claims_recovery_and_pruning_never_scan_a_table_that_is_mostly_theirs(app, shape):
    """Once Postgres had statistics of a table that was mostly runnable (a backlog), mostly
    running or mostly finished, it planned the join of the rows a statement had locked with
    the jobs table as a hash join over a sequential scan of the whole table: every claim,
    recovery pass or prune batch read every row. They update by id instead."""
    async with app.store.connection() as conn:
        if conn.info.server_version < 160000:
            pytest.skip("EXPLAIN (GENERIC_PLAN) needs Postgres 16")
        await conn.execute(SHAPES[shape])
        await conn.execute("ANALYZE chancy_jobs")
        outcome = Transition(uuid.uuid4(), JobState.SUCCEEDED, result_json="null", attempt=1)
        recover = ClusterSQL(app.names).recover(1000)
        prune = ClusterSQL(app.names).prune(["succeeded"], 3600, None, 1000)
        plans = {
            "claim": await _plan(conn, b"(GENERIC_PLAN) " + _generic(app.store.jobs.claim("default", "w", 100).query)),
            "write-back and claim": await _plan(conn, b"(GENERIC_PLAN) " + _generic(
                app.store.jobs.claim("default", "w", 100, [outcome]).query)),
            # These two run on the app's pool, planned with their parameters' values.
            "recovery": await _plan(conn, recover.query, recover.params),
            "prune": await _plan(conn, prune.query, prune.params),
        }
    scanning = {name: plan for name, plan in plans.items()
                if any("Seq Scan on chancy_jobs" in line for line in _writes(plan))}
    assert not scanning, "\n\n".join(f"{name}:\n{plan}" for name, plan in scanning.items())
    assert "Seq Scan on chancy_jobs" not in plans["claim"] + plans["write-back and claim"]


def _writes(plan: str) -> list[str]:
    """The lines of a plan's ``Update on``/``Delete on`` chancy_jobs nodes and of the nodes
    below them (the rows they write, and how they are found)."""
    lines, inside, depth = [], False, 0
    for line in plan.splitlines():
        indent = len(line) - len(line.lstrip(" ->"))
        if inside and indent <= depth:
            inside = False
        if not inside and re.search(r"(Update|Delete) on chancy_jobs", line):
            inside, depth = True, indent
        if inside:
            lines.append(line)
    return lines
