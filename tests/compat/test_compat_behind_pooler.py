"""A ``chancy.compat`` Celery app behind PgBouncer in transaction-pooling mode:
``broker_url`` through the pooler, ``broker_transport_options["session_url"]`` straight
to Postgres (docs/poolers.md)."""

from __future__ import annotations

import asyncio

from chancy.compat import Celery, worker_app
from tests.compat.conftest import BackgroundWorker


def double(x: int) -> int:
    return 2 * x


def test_delay_and_get_behind_a_transaction_pooler(pooled_dsn: str, dsn: str) -> None:
    app = Celery("pooled", broker=pooled_dsn, set_as_current=False)
    app.conf.broker_transport_options = {"session_url": dsn}
    task = app.task(name="pooled.double")(double)
    worker_app(app, pool="thread", concurrency=4)
    assert app.chancy.behind_pooler and app.chancy.session_dsn == dsn
    asyncio.run(app.chancy.migrate())
    background = BackgroundWorker(app).start()
    try:
        results = [task.delay(i) for i in range(30)]  # past psycopg's prepare threshold (5)
        assert [result.get(timeout=15) for result in results] == [2 * i for i in range(30)]
    finally:
        background.stop()
        app.close()
