"""Chancy behind PgBouncer in transaction-pooling mode (docs/poolers.md): statements go
through the pooler, unprepared and leaving no session state behind; LISTEN and advisory
locks use the session DSN. Workers here poll once a minute and waits recheck once a
minute, so every pickup and every finished wait within the timeouts came by notification."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from chancy import Chancy, Queue
from chancy.plugins.leadership import Leadership
from chancy.store.pg import job_store
from chancy.testing import eventually, running_worker

SLOW = 60.0


@pytest.fixture
async def pooled_app(pooled_dsn: str, dsn: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(job_store, "WAIT_RECHECK_INTERVAL", SLOW)
    app = Chancy(pooled_dsn, session_dsn=dsn,
                 plugins=[Queue("default", concurrency=10, polling_interval=SLOW), Leadership(interval=0.2)])

    @app.task(name="pooled.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="pooled.nap")
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"

    async with app:
        await app.migrate()  # under an advisory lock: on the session DSN
        yield app


async def test_worker_behind_a_transaction_pooler_runs_what_is_pushed(pooled_app: Chancy) -> None:
    add = pooled_app.tasks["pooled.add"]
    async with running_worker(pooled_app) as worker:
        # More pushes than psycopg's prepare threshold (5): prepared statements would be
        # missing on the pooler's other server connections.
        refs = [await add.push(i, 1) for i in range(30)]
        refs += await add.push_many([(i, 2) for i in range(1500)])  # the COPY path
        results = [(await ref.wait(timeout=15)).result for ref in refs]
        await eventually(lambda: worker.is_leader, timeout=10, message="leadership through the session DSN")
    assert results == [i + 1 for i in range(30)] + [i + 2 for i in range(1500)]


async def test_wait_sync_behind_a_transaction_pooler_hears_the_completion(pooled_app: Chancy) -> None:
    nap = pooled_app.tasks["pooled.nap"]
    async with running_worker(pooled_app):
        for _ in range(3):
            ref = nap.push_sync(0.3)
            started = time.monotonic()
            record = await asyncio.to_thread(pooled_app.wait_sync, ref, 8)
            # A lost notification shows as a wait that ends at its deadline (it reads the
            # row once more then), not as an error.
            assert record.result == "rested" and time.monotonic() - started < 5
    # The waits took turns on one pooled session connection, not one dial each.
    assert pooled_app.store._session_sync_pool.get_stats()["connections_num"] == 1


async def test_nothing_is_left_set_on_the_poolers_server_connections(pooled_app: Chancy, pooled_dsn: str) -> None:
    add = pooled_app.tasks["pooled.add"]
    async with running_worker(pooled_app):
        refs = await add.push_many([(i, i) for i in range(300)])
        await refs[-1].wait(timeout=15)
    # Hold every server connection of the pool at once, so each is looked at.
    from pgbouncer_support import POOL_SIZE

    conns = [await psycopg.AsyncConnection.connect(pooled_dsn, prepare_threshold=None) for _ in range(POOL_SIZE)]
    try:
        modes = [(await (await conn.execute("SHOW plan_cache_mode")).fetchone())[0] for conn in conns]
    finally:
        for conn in conns:
            await conn.rollback()
            await conn.close()
    assert modes == ["auto"] * POOL_SIZE
