"""The keyed claim behind PgBouncer in transaction-pooling mode: its lock and its claim are
one pipeline, one implicit transaction up to the sync, so the pooler keeps them on one
server connection; many claims at once still never share a key's place."""

from __future__ import annotations

import asyncio

from chancy import Chancy, Job, Queue


async def test_keyed_claims_through_a_transaction_pooler_keep_the_limit(pooled_dsn: str, dsn: str) -> None:
    async with Chancy(pooled_dsn, session_dsn=dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        queue = app.queue("default")
        for round_ in range(5):
            await app.push_many([Job("core_tasks.echo", args=[i], concurrency_key=f"r{round_}-k{i % 3}")
                                 for i in range(30)])
            results = await asyncio.gather(*(queue.claim(f"worker-{n}", 10) for n in range(8)))
            keys = sorted(r.concurrency_key for claimed in results for r in claimed)
            assert keys == [f"r{round_}-k{k}" for k in range(3)]
