"""A stock Celery producer and ``celery worker`` on Chancy through PgBouncer in
transaction-pooling mode: broker and backend URLs through the pooler, ``session_url``
straight to Postgres for LISTEN (docs/poolers.md)."""

from __future__ import annotations

import asyncio

import pytest

MESSAGES = 30  # more messages than psycopg's prepare threshold (5) on every connection


@pytest.mark.parametrize("pool", ["solo", "prefork"])
async def test_stock_celery_behind_a_transaction_pooler(interop_dsn, pooled_dsn, celery_worker, monkeypatch, pool):
    import celery_app as module

    producer = module.make_app(pooled_dsn, interop_dsn)
    celery_worker(pool=pool, concurrency=2, INTEROP_POOLED_DSN=pooled_dsn)
    results = [producer.tasks["interop.add"].delay(i, 1) for i in range(MESSAGES)]
    values = await asyncio.to_thread(lambda: [result.get(timeout=20) for result in results])
    assert values == [i + 1 for i in range(MESSAGES)]
    producer.close()
