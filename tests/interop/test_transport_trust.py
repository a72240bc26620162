"""What the chancy transport refuses to trust: a row's serializer that the consuming
Celery worker does not accept, a message reusing the id of someone else's row, a
priority outside Celery's range, and bodies that cannot be read. Each refusal fails
that one message with a reason and leaves the queue working for the next."""

from __future__ import annotations

import asyncio
import base64
import pickle
import uuid
from pathlib import Path

import psycopg
import pytest
from celery.result import AsyncResult
from kombu import Connection, Exchange, Producer

from chancy import Chancy
from chancy.compat.protocol import job_id_for
from chancy.job import Job, JobState
from chancy.queues.pg import Queue
from chancy.store.pg.statements import single
from chancy.testing import eventually


class CreatesMarker:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def pickled_arguments(marker: Path) -> dict[str, str]:
    """A row's ``meta["celery"]["payload"]`` claiming pickled ``(args, kwargs)``, as a
    producer with write access to the table could store it."""
    body = pickle.dumps(((CreatesMarker(marker),), {}))
    return {"content_type": "application/x-python-serialize", "encoding": "binary",
            "body": base64.b64encode(body).decode()}


@pytest.fixture
async def chancy_app(interop_dsn: str):
    app = Chancy(interop_dsn, plugins=[Queue("celery")])
    yield app
    await app.close()


async def _result(celery_app, task_id: str, timeout: float = 20.0):
    return await asyncio.to_thread(AsyncResult(task_id, app=celery_app).get, timeout=timeout)


def _row(dsn: str, job_id: uuid.UUID) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT state, result, errors, func, args, priority FROM chancy_jobs WHERE id = %s",
                            (job_id,)).fetchone()


def _publish_raw(dsn: str, body: bytes | str, headers: dict, content_type: str = "application/json") -> None:
    import chancy.compat.kombu  # noqa: F401 - the transport alias

    with Connection("chancy+" + dsn) as conn:
        Producer(conn.default_channel).publish(
            body, routing_key="celery", exchange=Exchange(""), content_type=content_type,
            content_encoding="utf-8", headers=headers, serializer=None)


# --- 1. a row's serializer is checked against the consumer's accept_content ---------------
async def test_pickle_in_a_row_is_never_unpickled_for_a_json_worker(celery_app, chancy_app, celery_worker, tmp_path):
    marker = tmp_path / "unpickled"
    evil = await chancy_app.push(Job("interop.add", queue="celery",
                                     meta={"celery": {"payload": pickled_arguments(marker)}}))
    worker = celery_worker(pool="solo")  # accept_content=['json'], its broker options accept pickle
    assert await eventually(lambda: marker.exists() or _row(chancy_app.dsn, evil.id)[0] != "pending", timeout=20)
    assert not marker.exists(), "the transport unpickled a row for a JSON-only worker"
    good = celery_app.tasks["interop.add"].delay(2, 3)
    assert await _result(celery_app, good.id) == 5, worker.log()
    record = await evil.wait(timeout=20)
    assert record.state is JobState.FAILED, worker.log()
    assert "application/x-python-serialize" in record.errors[-1]["message"]
    assert "accept" in record.errors[-1]["message"]


# --- 2. a task id belongs to its row; only the task's own retry republishes it -------------
@pytest.mark.parametrize("ignore_result", [False, True], ids=["result", "ignore_result"])
async def test_a_celery_retry_still_republishes_its_row(interop_dsn, celery_app, celery_worker, ignore_result):
    worker = celery_worker(pool="solo")
    sent = celery_app.tasks["interop.retry_twice"].apply_async(ignore_result=ignore_result)
    job_id = job_id_for(sent.id)

    def state_and_attempts() -> tuple[str, int]:
        with psycopg.connect(interop_dsn) as conn:
            return conn.execute("SELECT state, attempts FROM chancy_jobs WHERE id = %s", (job_id,)).fetchone()

    assert await eventually(lambda: state_and_attempts() == ("succeeded", 3), timeout=20), worker.log()
    if not ignore_result:
        assert await _result(celery_app, sent.id) == 2


async def test_a_message_cannot_overwrite_a_finished_row(interop_dsn, celery_app, celery_worker):
    from chancy.compat.kombu import TaskIdInUse

    worker = celery_worker(pool="solo")
    add = celery_app.tasks["interop.add"]
    task_id = str(uuid.uuid4())
    assert await _result(celery_app, add.apply_async((1, 2), task_id=task_id).id) == 3, worker.log()
    before = _row(interop_dsn, job_id_for(task_id))
    with pytest.raises(TaskIdInUse, match=f"{task_id}.*succeeded"):
        add.apply_async((50, 50), task_id=task_id)
    with pytest.raises(TaskIdInUse):  # retries=1 claims to be a retry; the row is not running
        add.apply_async((50, 50), task_id=task_id, retries=1)
    assert _row(interop_dsn, job_id_for(task_id)) == before
    assert AsyncResult(task_id, app=celery_app).get(timeout=5) == 3


async def test_a_waiting_row_is_not_replaced_and_an_identical_republish_is_stored_once(interop_dsn, celery_app):
    from chancy.compat.kombu import TaskIdInUse

    add = celery_app.tasks["interop.add"]
    task_id = str(uuid.uuid4())
    add.apply_async((1, 2), task_id=task_id, countdown=60)
    before = _row(interop_dsn, job_id_for(task_id))
    with pytest.raises(TaskIdInUse, match="scheduled"):
        add.apply_async((7, 7), task_id=task_id, countdown=60)
    assert _row(interop_dsn, job_id_for(task_id)) == before
    repeated = str(uuid.uuid4())  # e.g. a publish sent again after its connection dropped
    for _ in range(2):
        _publish_raw(interop_dsn, '[[3, 4], {}, {}]', {"task": "interop.add", "id": repeated})
    with psycopg.connect(interop_dsn) as conn:
        assert conn.execute("SELECT state, args, errors FROM chancy_jobs WHERE id = %s",
                            (job_id_for(repeated),)).fetchall() == [("pending", [3, 4], [])]


async def test_a_result_store_sent_again_is_applied_once(interop_dsn, celery_app):
    """What the backend sends again after a dropped connection, not knowing whether the
    first one committed: the second changes nothing (one error entry, not two)."""
    backend = celery_app.backend
    job_id = uuid.uuid4()
    store = backend.result_sql.store_state(
        job_id, state="failed", celery={"state": "FAILURE"}, result_json=None,
        error={"type": "ValueError", "message": "once"}, func="interop.fail", queue="celery",
        args_json="[]", kwargs_json="{}", write=uuid.uuid4().hex)
    for _ in range(2):
        backend.database.run(single(store))
    assert [e["message"] for e in _row(interop_dsn, job_id)[2]] == ["once"]


# --- 4. priorities out of Celery's range are clamped, never a database error ----------------
async def test_a_stock_celery_priority_is_clamped_to_the_virtual_transport_range(interop_dsn, celery_app):
    high = celery_app.tasks["interop.add"].apply_async((1, 2), priority=10**12)
    low = celery_app.tasks["interop.add"].apply_async((1, 2), priority=-5)
    assert _row(interop_dsn, job_id_for(high.id))[5] == 9
    assert _row(interop_dsn, job_id_for(low.id))[5] == 0


async def test_a_chancy_compat_priority_is_clamped_to_the_amqp_range(interop_dsn):
    from chancy.compat import Celery as CompatCelery

    compat = CompatCelery("compat_priority", broker=interop_dsn, set_as_current=False)

    @compat.task(name="interop.add")
    def add(a, b):
        return a + b

    try:
        high = add.apply_async((1, 2), priority=10**12, queue="celery")
        low = add.apply_async((1, 2), priority=-10**12, queue="celery")
        assert _row(interop_dsn, job_id_for(high.id))[5] == 255
        assert _row(interop_dsn, job_id_for(low.id))[5] == 0
    finally:
        await compat.chancy.close()


# --- 5. unreadable messages and rows fail alone -------------------------------------------
async def test_unreadable_bodies_become_failed_rows_and_the_queue_keeps_working(
        interop_dsn, celery_app, celery_worker):
    malformed, too_deep = str(uuid.uuid4()), str(uuid.uuid4())
    _publish_raw(interop_dsn, b'[[1, 2], {"a": ', {"task": "interop.add", "id": malformed})
    depth = 100_000
    _publish_raw(interop_dsn, "[" * depth + "]" * depth, {"task": "interop.add", "id": too_deep})
    for task_id in (malformed, too_deep):
        state, result, errors, func, args, _ = _row(interop_dsn, job_id_for(task_id))
        assert (state, result, func, args) == ("failed", None, "interop.add", []), errors
        assert "cannot be decoded" in errors[-1]["message"], errors
    worker = celery_worker(pool="solo")
    assert await _result(celery_app, celery_app.tasks["interop.add"].delay(4, 4).id) == 8, worker.log()


async def test_rows_that_cannot_become_messages_fail_alone(interop_dsn, chancy_app, celery_app, celery_worker):
    corrupt = await chancy_app.push(Job("interop.add", queue="celery", meta={"celery": {"payload": {
        "content_type": "application/json", "encoding": "utf-8", "body": "not base64 at all!"}}}))
    too_deep = await chancy_app.push(Job("interop.kinds", queue="celery"))  # would succeed with no arguments
    depth = 5_000
    with psycopg.connect(interop_dsn) as conn:
        conn.execute("UPDATE chancy_jobs SET args = %s::jsonb WHERE id = %s", ("[" * depth + "]" * depth, too_deep.id))
    worker = celery_worker(pool="solo")
    good = celery_app.tasks["interop.add"].delay(1, 1)
    assert await _result(celery_app, good.id) == 2, worker.log()
    for ref, reason in ((corrupt, "Incorrect padding"), (too_deep, "RecursionError")):
        record = await ref.wait(timeout=20)
        assert record.state is JobState.FAILED, worker.log()
        assert "cannot be sent to a Celery worker" in record.errors[-1]["message"], record.errors
        assert reason in record.errors[-1]["message"], record.errors


async def test_a_message_with_headers_too_deep_to_store_is_a_failed_row(interop_dsn):
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    task_id = str(uuid.uuid4())
    _publish_raw(interop_dsn, '[[1, 2], {}, {}]', {"task": "interop.add", "id": task_id, "deep": deep})
    state, result, errors, func, args, _ = _row(interop_dsn, job_id_for(task_id))
    assert (state, func, args) == ("failed", "interop.add", []), errors
    assert "nested too deeply" in errors[-1]["message"], errors
