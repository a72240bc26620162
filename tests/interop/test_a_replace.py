"""``Task.replace()`` by stock Celery workers on Chancy's broker and backend: the
replacement is published under the replaced task's id while the replaced run still holds
the row, takes the row over, and ``AsyncResult(id).get()`` returns the replacement's
result, as on Redis (a task, a chain, a group, nested replacements, a replaced chain
step). Reusing the id without coming from the replaced run is still refused."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from celery import chain, chord
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


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
async def test_a_replacement_takes_over_the_replaced_tasks_id(interop_dsn, celery_app, celery_worker, pool):
    worker = celery_worker(pool=pool, concurrency=2, app="replace_app")
    sig = celery_app.signature

    single = sig("replace.with_add", (2, 3)).delay()
    nested = sig("replace.nesting", (3,)).delay()
    chained = sig("replace.with_chain", (4, 5)).delay()
    step = chain(sig("interop.add", (1, 1)), sig("replace.with_add", (5,)), sig("replace.identity")).delay()

    assert await _get(celery_app, single.id) == 5, worker.log()
    # each run one level deeper, and a replacement's retries start again at 0
    assert await _get(celery_app, nested.id) == [[0, 0], [1, 0], [2, 0], [3, 0]], worker.log()
    assert await _get(celery_app, chained.id) == 9, worker.log()
    assert await _get(celery_app, step.id) == 7, worker.log()
    # the row is the replacement's: its task, its result; its deliveries go on counting
    assert _row(interop_dsn, single.id) == ("succeeded", "interop.add", 2, 5, 1, 1)
    assert _row(interop_dsn, nested.id)[:3] == ("succeeded", "replace.nesting", 4)


async def test_a_task_replaced_by_a_group_returns_the_groups_results(celery_app, celery_worker):
    """The group becomes a chord whose body (``celery.accumulate``) takes over the id,
    published when the group is done; also when the replaced task was a chord's body
    with a step chained after it (the body is then a chain starting with that id)."""
    worker = celery_worker(pool="prefork", concurrency=2, app="replace_app")
    sig = celery_app.signature
    grouped = sig("replace.with_group", ([1, 2, 3], 10)).delay()
    body = (chord([sig("interop.add", (1, 2)), sig("interop.add", (3, 4))], sig("replace.with_group", (5,)))
            | sig("replace.total")).delay()
    assert await _get(celery_app, grouped.id) == [11, 12, 13], worker.log()
    assert await _get(celery_app, body.id) == 20, worker.log()


async def test_reusing_a_task_id_without_replacing_it_is_still_refused(interop_dsn, celery_app, celery_worker):
    from chancy.compat.kombu import TaskIdInUse

    worker = celery_worker(pool="solo", app="replace_app")
    add = celery_app.tasks["interop.add"]
    sleeper = celery_app.signature("replace.sleep_then_add", (3, 2, 3)).delay()
    task_id = sleeper.id
    await eventually(lambda: _row(interop_dsn, task_id)[0] == "running", timeout=20, message="running")
    marks = {"root_id": task_id, "replaced_task_nesting": 1}
    with pytest.raises(TaskIdInUse, match="running"):  # replace marks, but sent by no task of that run
        add.apply_async((50, 50), task_id=task_id, parent_id=str(uuid.uuid4()), **marks)
    with pytest.raises(TaskIdInUse, match="running"):  # from the task itself, without the marks
        add.apply_async((50, 50), task_id=task_id, parent_id=task_id, root_id=task_id)
    with pytest.raises(TaskIdInUse, match="running"):  # another workflow's root
        add.apply_async((50, 50), task_id=task_id, parent_id=task_id, root_id=str(uuid.uuid4()),
                        replaced_task_nesting=1)
    assert await _get(celery_app, task_id) == 5, worker.log()
    finished = _row(interop_dsn, task_id)
    with pytest.raises(TaskIdInUse, match="succeeded"):  # every mark, but the row is finished
        add.apply_async((50, 50), task_id=task_id, parent_id=task_id, **{**marks, "replaced_task_nesting": 2})
    assert _row(interop_dsn, task_id) == finished
    assert await _get(celery_app, task_id) == 5


async def test_a_task_waiting_for_its_replacement_is_not_run_again_after_its_worker_dies(
        interop_dsn, celery_app, celery_worker):
    """Replaced by a chain, the task waits parked for the chain's last step (its id),
    no longer running under its worker: killed meanwhile, the worker's rows are
    recovered, and only the chain step it was running runs again, not the replaced task."""
    first = celery_worker(pool="prefork", app="replace_app")
    sent = celery_app.signature("replace.with_slow_chain", (100,)).delay()

    def slow_step_running() -> bool:
        with psycopg.connect(interop_dsn) as conn:
            return bool(conn.execute("SELECT 1 FROM chancy_jobs WHERE func = 'interop.record' "
                                     "AND state = 'running'").fetchone())

    await eventually(slow_step_running, timeout=20, message="the chain's first step running")
    assert _row(interop_dsn, sent.id)[:2] == ("scheduled", "replace.with_slow_chain")
    first.kill()
    second = celery_worker(pool="prefork", app="replace_app")
    assert await _get(celery_app, sent.id, timeout=60) == 102, second.log()
    assert [key for key, _ in ran(interop_dsn)].count(100) == 1


async def test_replacing_works_with_another_result_backend(interop_dsn, celery_worker, redis_url):
    """With a backend other than Chancy's, the ack finishes the replaced task's row before
    it runs (early ack); its replacement still takes the row over, as the task's own
    retry does."""
    from celery_app import make_app

    client = make_app(interop_dsn, result_backend=redis_url)
    worker = celery_worker(pool="prefork", concurrency=2, app="replace_app", INTEROP_BACKEND=redis_url)
    single = client.signature("replace.with_add", (2, 3)).delay()
    chained = client.signature("replace.with_chain", (4, 5)).delay()
    try:
        assert await _get(client, single.id) == 5, worker.log()
        assert await _get(client, chained.id) == 9, worker.log()
    finally:
        client.close()
    assert _row(interop_dsn, chained.id)[:2] == ("succeeded", "replace.identity")
