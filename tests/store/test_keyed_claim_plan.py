"""The keyed claim key by key (``claim_keyed_heads`` in ``chancy/store/pg/sql/jobs.sql``)
never reads a full key's backlog: planned as the claim pool's connections plan it (a
generic plan), run on 20,000 pending jobs of one full key, no node of its plan returns
more than a handful of rows, and it takes the other key's and the unkeyed job."""

from __future__ import annotations

import re

from psycopg import sql

from chancy import Chancy, Queue

BACKLOG = 20_000


#: The type of each of the claim's parameters (PREPARE cannot infer them all).
TYPES = {"queue": "text", "limit": "int", "fair": "bool", "start": "int", "worker": "text"}


def _prepared(query: bytes, params: dict) -> tuple[bytes, list]:
    """``PREPARE heads`` of ``query``, its named placeholders as ``$n``, and their values
    in that order."""
    order: dict[bytes, int] = {}
    text = re.sub(rb"%\((\w+)\)[sb]", lambda m: b"$%d" % order.setdefault(m.group(1), len(order) + 1), query)
    names = [name.decode() for name in order]
    return b"PREPARE heads(%s) AS " % ", ".join(TYPES[n] for n in names).encode() + text, [params[n] for n in names]


async def test_the_claim_key_by_key_reads_none_of_a_full_keys_backlog(dsn: str) -> None:
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        async with app.store.connection() as conn:
            await conn.execute(
                "INSERT INTO chancy_jobs (id, queue, func, concurrency_key, concurrency, state, taken_by, attempts)"
                " SELECT gen_random_uuid(), 'default', 'x', 'a', 1, CASE WHEN i = 0 THEN 'running' ELSE 'pending' END,"
                " CASE WHEN i = 0 THEN 'w' END, (i = 0)::int FROM generate_series(0, %s) AS i", [BACKLOG])
            await conn.execute("INSERT INTO chancy_jobs (id, queue, func, concurrency_key, concurrency)"
                               " VALUES (gen_random_uuid(), 'default', 'b', 'b', 1),"
                               " (gen_random_uuid(), 'default', 'plain', NULL, NULL)")
            await conn.execute("ANALYZE chancy_jobs")
            [_, heads] = app.store.jobs.claim_keyed("default", "w2", 100, by_key=True).statements
            prepare, values = _prepared(heads.query, heads.params)
            async with conn.transaction(force_rollback=True):
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(prepare)
                execute = sql.SQL("EXECUTE heads({})").format(sql.SQL(", ").join(map(sql.Literal, values)))
                async with conn.transaction(force_rollback=True):
                    cur = await conn.execute(execute)
                    funcs = sorted(row[2] for row in await cur.fetchall() if row[0] is not None)
                cur = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT TEXT) ") + execute)
                plan = "\n".join(row[0] for row in await cur.fetchall())
                await conn.execute("DEALLOCATE heads")
    assert funcs == ["b", "plain"], plan
    assert "Seq Scan" not in plan and "Sort Key: chancy_jobs" not in plan, plan
    assert "chancy_jobs_pending_by_key" in plan, plan
    rows = [float(n) * int(loops) for n, loops in re.findall(r"actual time=\S+ rows=([\d.]+) loops=(\d+)", plan)]
    assert max(rows) < 100, plan
