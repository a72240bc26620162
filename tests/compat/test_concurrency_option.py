"""The Celery layer's per-key concurrency option (``chancy_concurrency_key`` /
``chancy_concurrency`` on ``@app.task``): the key each ``.delay()`` stores, the claim's
limit on it, a bad rule refused at the call, and stock Celery accepting (and ignoring) the
same declaration."""

from __future__ import annotations

import asyncio

import pytest


def rows(celery_app) -> list[tuple]:
    async def read() -> list[tuple]:
        async with celery_app.chancy.store.connection() as conn:
            return await (await conn.execute(
                "SELECT concurrency_key, concurrency FROM chancy_jobs ORDER BY id")).fetchall()
    return asyncio.run(read())


def test_each_call_stores_its_key_and_the_claim_keeps_the_limit(celery_app):
    @celery_app.task(name="keyed.sync", chancy_concurrency_key="customer", chancy_concurrency=1)
    def sync(customer, order):
        return order

    @celery_app.task(name="keyed.ship", bind=True,
                     chancy_concurrency_key=lambda order, **_: order["customer"], chancy_concurrency=2)
    def ship(self, order, express=False):
        return order

    @celery_app.task(name="keyed.plain")
    def plain(x):
        return x

    sync.delay(42, 1)
    sync.apply_async(("acme", 2))
    sync.delay(customer=42, order=3)
    ship.delay({"customer": "c-7"}, express=True)
    plain.delay(1)
    assert rows(celery_app) == [("42", 1), ("acme", 1), ("42", 1), ("c-7", 2), (None, None)]

    async def claim() -> list:
        return await celery_app.chancy.queue("default").claim("w", 10)
    claimed = asyncio.run(claim())
    assert sorted(str(r.concurrency_key) for r in claimed) == ["42", "None", "acme", "c-7"]


def test_a_key_that_cannot_be_made_fails_the_call_and_stores_nothing(celery_app):
    @celery_app.task(name="keyed.bad", chancy_concurrency_key=lambda order: order["customer"])
    def bad(order):
        return order

    @celery_app.task(name="keyed.limit_alone", chancy_concurrency=2)
    def limit_alone(order):
        return order

    with pytest.raises(ValueError, match=r"concurrency_key function of task 'keyed.bad' failed: KeyError"):
        bad.delay({"id": 1})
    with pytest.raises(ValueError, match="chancy_concurrency needs chancy_concurrency_key"):
        limit_alone.delay(1)
    assert rows(celery_app) == []


def test_stock_celery_accepts_the_options_and_ignores_them():
    celery = pytest.importorskip("celery")
    app = celery.Celery("stock", set_as_current=False)

    @app.task(chancy_concurrency_key="customer", chancy_concurrency=1)
    def sync(customer):
        return customer

    assert sync.run("c-1") == "c-1" and sync.chancy_concurrency == 1
