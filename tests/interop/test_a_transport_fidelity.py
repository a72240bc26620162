"""Stock Celery workers on Chancy's broker and backend behave as on Redis where Celery's
own integration suite found they did not (issue 25), under every pool:

- ``Task.replace()``: the replacement is published under the replaced task's id while
  the replaced run still holds the row, takes the row over, and ``AsyncResult(id).get()``
  returns the replacement's result (a task, a chain, a group, nested replacements, a
  replaced chain step or chord body); reusing the id without coming from the replaced
  run is still refused; a task waiting for its replacement's last step is parked, so a
  worker dying meanwhile does not get it run again, and revoked meanwhile, its
  replacement's last step is dropped (as a worker drops a revoked task's message).
- ``self.request``: the ``eta`` of a task sent with a countdown or eta (delivered once
  due), message properties the producer set (``app_id``), and
  ``delivery_info["redelivered"]`` (False on a first delivery, True after a requeue or
  once the worker of the previous delivery was lost).

One worker per pool runs every check (``-A fidelity_app``)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from celery import chain, chord
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually

from broker_support import redis_url  # noqa: F401 - a fixture
from interop_support import ran


async def _get(celery_app, task_id: str, timeout: float = 30.0):
    return await asyncio.to_thread(AsyncResult(task_id, app=celery_app).get, timeout=timeout)


def _row(dsn: str, task_id: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT state, func, attempts, result, meta->'celery'->'replaced_task_nesting', "
            "meta->'celery'->'retries_base' FROM chancy_jobs WHERE id = %s", (job_id_for(task_id),)).fetchone()


def _states(dsn: str, where: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(f"SELECT state FROM chancy_jobs WHERE {where}")]


def _running(dsn: str, where: str, *params) -> bool:
    with psycopg.connect(dsn) as conn:
        return bool(conn.execute(f"SELECT 1 FROM chancy_jobs WHERE state = 'running' AND {where}", params).fetchone())


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
async def test_replace_and_request_fields_as_on_redis(interop_dsn, celery_app, celery_worker, pool):
    from chancy.compat.kombu import TaskIdInUse

    worker = celery_worker(pool=pool, concurrency=2, app="fidelity_app")
    sig = celery_app.signature
    # first, a task that holds its row running a while before it replaces itself
    sleeper = sig("replace.sleep_then_add", (2, 2, 3)).delay()
    await eventually(lambda: _running(interop_dsn, "id = %s", job_id_for(sleeper.id)), timeout=20,
                     message="the sleeper running")
    marks = {"root_id": sleeper.id, "replaced_task_nesting": 1}
    add = celery_app.tasks["interop.add"]
    with pytest.raises(TaskIdInUse, match="running"):  # replace marks, but sent by no task of that run
        add.apply_async((50, 50), task_id=sleeper.id, parent_id=str(uuid.uuid4()), **marks)
    with pytest.raises(TaskIdInUse, match="running"):  # from the task itself, without the marks
        add.apply_async((50, 50), task_id=sleeper.id, parent_id=sleeper.id, root_id=sleeper.id)
    with pytest.raises(TaskIdInUse, match="running"):  # another workflow's root
        add.apply_async((50, 50), task_id=sleeper.id, parent_id=sleeper.id, root_id=str(uuid.uuid4()),
                        replaced_task_nesting=1)

    revoked = sig("replace.with_slow_chain", (200, 1.0)).delay()
    await eventually(lambda: _row(interop_dsn, revoked.id)[0] == "scheduled", timeout=20,
                     message="the replaced task parked, waiting for its chain")
    await asyncio.to_thread(AsyncResult(revoked.id, app=celery_app).revoke)
    single = sig("replace.with_add", (2, 3)).delay()
    nested = sig("replace.nesting", (3,)).delay()
    chained = sig("replace.with_chain", (4, 5)).delay()
    step = chain(sig("interop.add", (1, 1)), sig("replace.with_add", (5,)), sig("replace.identity")).delay()
    grouped = sig("replace.with_group", ([1, 2, 3], 10)).delay()  # a chord whose body takes the id
    body = (chord([sig("interop.add", (1, 2)), sig("interop.add", (3, 4))], sig("replace.with_group", (5,)))
            | sig("replace.total")).delay()  # the replaced body's chain then starts with the id

    sent = datetime.now(timezone.utc)
    when = sent + timedelta(seconds=1)
    at_eta = sig("request.eta").apply_async(eta=when)
    counted = sig("request.eta").apply_async(countdown=1)
    now = sig("request.eta").delay()
    props = sig("request.properties").apply_async(app_id="1234", user_id="someone")
    requeued = sig("request.requeued_once").delay()
    first = sig("request.redelivered").delay()

    assert await _get(celery_app, sleeper.id) == 5, worker.log()
    finished = _row(interop_dsn, sleeper.id)
    with pytest.raises(TaskIdInUse, match="succeeded"):  # every mark, but the row is finished
        add.apply_async((50, 50), task_id=sleeper.id, parent_id=sleeper.id, **{**marks, "replaced_task_nesting": 2})
    assert _row(interop_dsn, sleeper.id) == finished
    with pytest.raises(TaskRevokedError):
        await _get(celery_app, revoked.id)
    # the chain step that would have sent the replacement's last step (the revoked id) succeeded
    await eventually(lambda: _states(interop_dsn, "func = 'interop.record' AND args->>0 = '201'") == ["succeeded"],
                     timeout=20, message="the chain's first step succeeded")
    assert await _get(celery_app, single.id) == 5, worker.log()
    # each run one level deeper, and a replacement's retries start again at 0
    assert await _get(celery_app, nested.id) == [[0, 0], [1, 0], [2, 0], [3, 0]], worker.log()
    assert await _get(celery_app, chained.id) == 9, worker.log()
    assert await _get(celery_app, step.id) == 7, worker.log()
    assert await _get(celery_app, grouped.id) == [11, 12, 13], worker.log()
    assert await _get(celery_app, body.id) == 20, worker.log()
    # the row is the replacement's: its task, its result; its deliveries go on counting
    assert _row(interop_dsn, single.id) == ("succeeded", "interop.add", 2, 5, 1, 1)
    assert _row(interop_dsn, nested.id)[:3] == ("succeeded", "replace.nesting", 4)

    assert await _get(celery_app, at_eta.id) == when.isoformat(), worker.log()
    assert sent + timedelta(seconds=0.9) < datetime.fromisoformat(await _get(celery_app, counted.id)) < when + timedelta(5)
    assert await _get(celery_app, now.id) is None
    delivered = await _get(celery_app, props.id)
    assert delivered["app_id"] == "1234" and delivered["user_id"] == "someone", delivered
    assert await _get(celery_app, requeued.id) is True, worker.log()
    assert await _get(celery_app, first.id) is False


async def test_after_a_worker_is_lost(interop_dsn, celery_app, celery_worker):
    """Killed while a task waits for its chain replacement's last step and another task
    runs: the replaced task is not run again (only the chain step that was running is),
    and the task that was running is delivered again as ``redelivered``."""
    first = celery_worker(pool="prefork", concurrency=2, app="fidelity_app")
    replaced = celery_app.signature("replace.with_slow_chain", (100,)).delay()
    slow = celery_app.signature("request.slow_unless_redelivered", (60,)).delay()
    await eventually(lambda: _running(interop_dsn, "func = 'interop.record'"), timeout=20,
                     message="the chain's first step running")
    await eventually(lambda: _running(interop_dsn, "id = %s", job_id_for(slow.id)), timeout=20,
                     message="the slow task running")
    assert _row(interop_dsn, replaced.id)[:2] == ("scheduled", "replace.with_slow_chain")  # parked
    first.kill()
    second = celery_worker(pool="prefork", concurrency=2, app="fidelity_app")
    assert await _get(celery_app, replaced.id, timeout=60) == 102, second.log()
    assert [key for key, _ in ran(interop_dsn)].count(100) == 1
    assert await _get(celery_app, slow.id, timeout=60) is True, second.log()


async def test_replacing_works_with_another_result_backend(interop_dsn, celery_worker, redis_url):
    """With a backend other than Chancy's, the ack finishes the replaced task's row before
    it runs (early ack); its replacement still takes the row over, as the task's own
    retry does."""
    from celery_app import make_app

    client = make_app(interop_dsn, result_backend=redis_url)
    worker = celery_worker(pool="prefork", concurrency=2, app="fidelity_app", INTEROP_BACKEND=redis_url)
    single = client.signature("replace.with_add", (2, 3)).delay()
    chained = client.signature("replace.with_chain", (4, 5)).delay()
    try:
        assert await _get(client, single.id) == 5, worker.log()
        assert await _get(client, chained.id) == 9, worker.log()
    finally:
        client.close()
    assert _row(interop_dsn, chained.id)[:2] == ("succeeded", "replace.identity")
