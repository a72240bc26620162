"""What a stock Celery worker's ``self.request`` holds for a message that went through
Chancy's transport, as on Redis: the ``eta`` of a task sent with a countdown or eta
(delivered once due), message properties the producer set (``app_id``), and
``delivery_info["redelivered"]`` (False on a first delivery, True after a requeue or
once the worker of the previous delivery was lost)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from celery.result import AsyncResult

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually


async def _get(celery_app, task_id: str, timeout: float = 30.0):
    return await asyncio.to_thread(AsyncResult(task_id, app=celery_app).get, timeout=timeout)


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
async def test_request_fields_are_delivered_as_celery_sent_them(celery_app, celery_worker, pool):
    worker = celery_worker(pool=pool, concurrency=2, app="request_app")
    sig = celery_app.signature
    sent = datetime.now(timezone.utc)
    when = sent + timedelta(seconds=1)
    at_eta = sig("request.eta").apply_async(eta=when)
    counted = sig("request.eta").apply_async(countdown=1)
    now = sig("request.eta").delay()
    props = sig("request.properties").apply_async(app_id="1234", user_id="someone")
    requeued = sig("request.requeued_once").delay()
    first = sig("request.redelivered").delay()

    assert await _get(celery_app, at_eta.id) == when.isoformat(), worker.log()
    assert sent + timedelta(seconds=0.9) < datetime.fromisoformat(await _get(celery_app, counted.id)) < when + timedelta(5)
    assert await _get(celery_app, now.id) is None
    delivered = await _get(celery_app, props.id)
    assert delivered["app_id"] == "1234" and delivered["user_id"] == "someone", delivered
    assert await _get(celery_app, requeued.id) is True, worker.log()
    assert await _get(celery_app, first.id) is False


async def test_a_delivery_recovered_from_a_lost_worker_is_redelivered(interop_dsn, celery_app, celery_worker):
    first = celery_worker(pool="prefork", app="request_app")
    sent = celery_app.signature("request.slow_unless_redelivered", (60,)).delay()

    def running() -> bool:
        with psycopg.connect(interop_dsn) as conn:
            row = conn.execute("SELECT state FROM chancy_jobs WHERE id = %s", (job_id_for(sent.id),)).fetchone()
        return row == ("running",)

    await eventually(running, timeout=20, message="the first delivery running")
    first.kill()
    second = celery_worker(pool="prefork", app="request_app")
    assert await _get(celery_app, sent.id, timeout=60) is True, second.log()
