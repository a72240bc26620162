"""Chancy's broker beside the result backend a team already has: Celery's ``rpc://`` (the
tutorial's default; results travel back through the broker to a per-client reply queue),
Redis and SQLAlchemy. ``.get()`` returns, and no result becomes a job row."""

from __future__ import annotations

import time

import psycopg
import pytest

from broker_support import broker_only_app, redis_url  # noqa: F401 - a fixture


def _jobs(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT queue, func, state FROM chancy_jobs ORDER BY created_at").fetchall()


def _leftover_messages(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM chancy_kombu_messages").fetchone()[0]


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_rpc_backend_returns_results_through_chancys_broker(interop_dsn, celery_worker, pool):
    app = broker_only_app(interop_dsn, "chancy+" + interop_dsn, "rpc://")
    worker = celery_worker(pool=pool, concurrency=2, app="broker_only_app", INTEROP_BACKEND="rpc://")
    add = app.tasks["interop.add"]
    assert add.delay(1, 2).get(timeout=30) == 3, worker.log()
    results = [add.delay(i, i) for i in range(5)]
    assert [result.get(timeout=30) for result in results] == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="boom"):
        app.tasks["interop.fail"].delay("boom").get(timeout=30)
    polled = add.delay(20, 22)  # .ready() polls the reply queue (basic_get, then ack or requeue)
    deadline = time.monotonic() + 30
    while not polled.ready() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert polled.get(timeout=5) == 42
    assert "Unrunnable" not in worker.log()
    # One row per task sent, finished by its ack (the outcome is the rpc backend's); no
    # result became a row of a queue named after the client.
    assert _jobs(interop_dsn) == [("celery", "interop.add", "succeeded")] * 6 + [
        ("celery", "interop.fail", "succeeded"), ("celery", "interop.add", "succeeded")]
    assert _leftover_messages(interop_dsn) == 0  # every result was taken by its client
    app.close()


@pytest.mark.parametrize("backend", ["redis", "sqlalchemy"])
def test_other_result_backends_beside_chancys_broker(interop_dsn, celery_worker, request, backend):
    pytest.importorskip(backend)
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
    else:  # Celery's database backend, on the same Postgres through SQLAlchemy and psycopg 3
        url = "db+" + interop_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    app = broker_only_app(interop_dsn, "chancy+" + interop_dsn, url)
    worker = celery_worker(pool="prefork", concurrency=2, app="broker_only_app", INTEROP_BACKEND=url)
    assert app.tasks["interop.add"].delay(4, 5).get(timeout=30) == 9, worker.log()
    with pytest.raises(ValueError, match="bad"):
        app.tasks["interop.fail"].delay("bad").get(timeout=30)
    assert [row[1:] for row in _jobs(interop_dsn)] == [("interop.add", "succeeded"), ("interop.fail", "succeeded")]
    app.close()
