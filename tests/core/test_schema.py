"""Migrations, table prefixes and the claim query's plan at depth."""

import asyncio

import core_tasks
from chancy import Chancy, Job, JobState, Queue
from chancy.migrations import LATEST_VERSION
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
    async with app.connection() as conn:
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
        statement = app.job_sql.claim("default", "explain-worker", 10)
        async with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE really claims
            cur = await conn.execute(b"EXPLAIN ANALYZE " + statement.query, statement.params)
            plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "chancy_jobs_pending" in plan and "chancy_jobs_scheduled" in plan, plan
    # The scheduled index is read only up to now(): the 5,000 future rows are not visited.
    assert "rows=0" in plan.split("chancy_jobs_scheduled")[1].split("\n")[0], plan
