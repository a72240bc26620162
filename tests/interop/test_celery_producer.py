"""Path 1: a stock Celery producer publishes through the chancy transport; each message
becomes a first-class job row that a Chancy worker runs."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from kombu import Connection, Exchange, Producer

from chancy import Chancy
from chancy.errors import Fail
from chancy.execution import registry
from chancy.job import JobState, Limit
from chancy.queues.pg import Queue
from chancy.testing import eventually, running_worker

from celery_app import HAVE_YAML


def _record(app: Chancy, task_id: str):
    from chancy.compat.protocol import job_id_for

    return app.get_job_sync(job_id_for(task_id))


@pytest.fixture
async def chancy_app(interop_dsn: str):
    app = Chancy(interop_dsn, plugins=[Queue("celery", executor="thread", concurrency=4), Queue("other")])
    yield app
    await app.close()


async def test_apply_async_options_become_columns(celery_app, chancy_app):
    eta = datetime.now(timezone.utc) + timedelta(minutes=5)
    expires = eta + timedelta(hours=1)
    parent = celery_app.tasks["interop.add"].s(3)
    result = celery_app.tasks["interop.add"].apply_async(
        (1, 2), eta=eta, expires=expires, priority=7, queue="other", link=parent,
        time_limit=30, soft_time_limit=20, headers={"tenant": "acme"},
    )
    record = _record(chancy_app, result.id)
    assert (record.func, record.args, record.kwargs, record.queue) == ("interop.add", (1, 2), {}, "other")
    assert record.id == uuid.UUID(result.id)
    assert record.state is JobState.SCHEDULED
    assert abs((record.scheduled_at - eta).total_seconds()) < 0.01
    assert abs((record.expires_at - expires).total_seconds()) < 0.01
    assert record.priority == 7 and record.attempts == 0
    assert record.limits == (Limit(Limit.Type.TIME, 30),)
    celery = record.meta["celery"]
    assert celery["timelimit"] == [30, 20]
    assert celery["root_id"] == result.id and celery["parent_id"] is None
    assert celery["headers"] == {"tenant": "acme"}
    assert celery["callbacks"][0]["task"] == "interop.add" and celery["callbacks"][0]["args"] == [3]
    assert celery["correlation_id"] == result.id


async def test_countdown_and_chain_remainder(celery_app, chancy_app):
    from celery import chain

    add = celery_app.tasks["interop.add"]
    result = add.apply_async((1, 1), countdown=30)
    record = _record(chancy_app, result.id)
    assert 25 < (record.scheduled_at - record.created_at).total_seconds() < 35

    chained = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    first = _record(chancy_app, chained.parent.parent.id)
    # The rest of the chain travels reversed: the worker pops the last element first.
    assert [sig["args"] for sig in first.meta["celery"]["chain"]] == [[4], [3]]


async def test_custom_task_id_maps_to_a_stable_row_id(celery_app, chancy_app):
    result = celery_app.tasks["interop.add"].apply_async((1, 2), task_id="order-42")
    record = _record(chancy_app, "order-42")
    assert record.meta["celery"]["task_id"] == "order-42"
    assert record.id == uuid.uuid5(uuid.NAMESPACE_URL, "celery-task:order-42")
    assert result.id == "order-42"


@pytest.mark.parametrize("compression", ["zlib", "bzip2"])
@pytest.mark.parametrize("serializer", [
    "json", "pickle",
    pytest.param("yaml", marks=pytest.mark.skipif(not HAVE_YAML, reason="pyyaml is not installed")),
])
async def test_accepted_serializers_and_compression(celery_app, chancy_app, serializer, compression):
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    result = celery_app.tasks["interop.add"].apply_async((when, "x"), serializer=serializer, compression=compression)
    record = _record(chancy_app, result.id)
    assert record.state is JobState.PENDING, record.errors
    if serializer == "json":
        assert record.args == (when, "x")
    else:  # kept in its own serializer, in chancy.compat's payload format
        from chancy.compat import payload

        stored = record.meta["celery"]["payload"]
        assert record.args == () and stored["content_type"] != "application/json"
        assert payload.decode(stored, [serializer]) == ([when, "x"], {})


async def test_content_not_accepted_is_a_failed_row_keeping_the_message(celery_app, chancy_app):
    celery_app.conf.broker_transport_options = {"accept_content": ["json"]}
    result = celery_app.tasks["interop.add"].apply_async((1, 2), serializer="pickle")
    record = _record(chancy_app, result.id)
    assert record.state is JobState.FAILED
    assert "'application/x-python-serialize' is not accepted" in record.errors[-1]["message"]
    assert "accept_content" in record.errors[-1]["message"]
    assert record.func == "interop.add"
    assert record.meta["celery"]["raw"]["content-type"] == "application/x-python-serialize"


def _publish_raw(dsn: str, body: bytes | str, content_type: str, headers: dict, queue: str = "celery") -> None:
    with Connection("chancy+" + dsn) as conn:
        Producer(conn.default_channel).publish(
            body, routing_key=queue, exchange=Exchange(""), content_type=content_type,
            content_encoding="utf-8", headers=headers, serializer=None)


async def test_corrupt_and_unknown_messages_are_recorded_never_dropped(interop_dsn, chancy_app):
    import chancy.compat.kombu  # noqa: F401

    bad_json = str(uuid.uuid4())
    _publish_raw(interop_dsn, b"[1, 2", "application/json", {"task": "interop.add", "id": bad_json})
    unknown = str(uuid.uuid4())
    _publish_raw(interop_dsn, b"\x00\x01", "application/x-made-up", {"task": "interop.add", "id": unknown})
    not_a_task = str(uuid.uuid4())
    _publish_raw(interop_dsn, json.dumps({"hello": 1}), "application/json", {"id": not_a_task})

    for task_id, expected in ((bad_json, "cannot be decoded"), (unknown, "is not accepted"),
                              (not_a_task, "not a Celery task message")):
        record = _record(chancy_app, task_id)
        assert record.state is JobState.FAILED
        assert expected in record.errors[-1]["message"], record.errors
    # The transport is still usable after bad input.
    async with running_worker(chancy_app):
        pass


async def test_protocol_v1_message_is_converted(interop_dsn, chancy_app):
    import chancy.compat.kombu  # noqa: F401

    task_id = str(uuid.uuid4())
    body = {"task": "interop.add", "id": task_id, "args": [2, 5], "kwargs": {}, "retries": 1,
            "eta": None, "expires": None, "timelimit": (5, 9), "taskset": "g1", "utc": True,
            "callbacks": None, "errbacks": None, "chord": None}
    _publish_raw(interop_dsn, json.dumps(body), "application/json", {})
    record = _record(chancy_app, task_id)
    assert (record.func, record.args, record.attempts, record.state) == ("interop.add", (2, 5), 1, JobState.PENDING)
    assert record.meta["celery"]["group"] == "g1"
    assert record.meta["celery"]["timelimit"] == [9, 5]


async def test_chancy_worker_runs_celery_messages_and_celery_reads_results(celery_app, chancy_app, monkeypatch):
    """Path 1 and path 3: .delay() → a Chancy worker → a stock AsyncResult.get()."""
    monkeypatch.setitem(registry, "interop.add", lambda a, b: a + b)

    def fail(message):  # what the compat layer does with a Celery task's exception: no retry
        raise Fail(ValueError(message))

    monkeypatch.setitem(registry, "interop.fail", fail)
    good = celery_app.tasks["interop.add"].delay(20, 22)
    bad = celery_app.tasks["interop.fail"].delay("no good")
    async with running_worker(chancy_app):
        assert await asyncio.to_thread(good.get, timeout=10) == 42
        with pytest.raises(ValueError, match="no good"):
            await asyncio.to_thread(bad.get, timeout=10)
    assert good.state == "SUCCESS" and bad.state == "FAILURE"
    assert "no good" in bad.traceback
    record = _record(chancy_app, good.id)
    assert record.state is JobState.SUCCEEDED and record.result == 42


async def test_priorities_run_highest_first(celery_app, chancy_app, monkeypatch):
    order: list[int] = []
    monkeypatch.setitem(registry, "interop.record", lambda key, seconds=0.0: order.append(key))
    for priority in (0, 9, 3, 5):
        celery_app.tasks["interop.record"].apply_async((priority,), priority=priority)
    app = Chancy(chancy_app.dsn, plugins=[Queue("celery", executor="thread", concurrency=1)])
    async with running_worker(app):
        await asyncio.wait_for(_until(lambda: len(order) == 4), 10)
    await app.close()
    assert order == [9, 5, 3, 0]


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


def test_priority_mapping_round_trips():
    from chancy.compat.protocol import to_celery_priority, to_chancy_priority

    for p in range(10):
        assert to_celery_priority(to_chancy_priority(p)) == p
        assert to_celery_priority(to_chancy_priority(p, True), True) == p
    assert to_chancy_priority(9, lower_priority_first=True) == 0
    assert to_chancy_priority(42) == 9 and to_chancy_priority(None) == 0


def test_body_is_base64_of_serialized_data():
    """Guards the assumption the transport decodes without kombu's help."""
    from chancy.compat.protocol import decode_body

    body = base64.b64encode(json.dumps([[1], {}, {}]).encode()).decode()
    message = {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
               "properties": {"body_encoding": "base64"}, "headers": {}}
    assert decode_body(message, ["json"]) == [[1], {}, {}]


async def test_chancy_worker_continues_links_chains_and_errbacks_of_celery_messages(
        celery_app, chancy_app, monkeypatch):
    """What a Celery worker does after a task, a Chancy worker does for Celery messages."""
    from celery import chain

    failed_ids: list[str] = []
    monkeypatch.setitem(registry, "interop.add", lambda a, b: a + b)
    monkeypatch.setitem(registry, "interop.fail", lambda message: (_ for _ in ()).throw(Fail(ValueError(message))))
    monkeypatch.setitem(registry, "interop.on_error", failed_ids.append)
    add = celery_app.tasks["interop.add"]
    chained = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    linked = add.apply_async((1, 1), link=add.s(10))
    failing = celery_app.tasks["interop.fail"].apply_async(("x",), link_error=celery_app.signature("interop.on_error"))
    async with running_worker(chancy_app):
        assert await asyncio.to_thread(chained.get, timeout=10) == 10
        callback = await eventually(lambda: _child_of(chancy_app, linked.id), timeout=10)
        record = await chancy_app.wait(callback.id, timeout=10)
        assert record.result == 12 and record.meta["celery"]["root_id"] == linked.id
        await eventually(lambda: failed_ids == [failing.id], timeout=10)
    step = _record(chancy_app, chained.id)
    assert step.meta["celery"]["root_id"] == chained.parent.parent.id


def _child_of(app: Chancy, parent_id: str):
    with psycopg.connect(app.dsn) as conn:
        row = conn.execute("SELECT id FROM chancy_jobs WHERE meta->'celery'->>'parent_id' = %s", (parent_id,)).fetchone()
    return app.reference(row[0]) if row else None


def test_stock_get_sees_a_job_finished_without_a_notification_at_its_recheck(celery_app, interop_dsn, monkeypatch):
    """The result backend's wait rechecks the row, so a completion notification missed
    (or shaped by another Chancy version) only delays ``AsyncResult.get``."""
    import time

    from chancy.compat import backend
    from chancy.compat.protocol import job_id_for
    from tests.cluster.test_waiting import finish_silently

    monkeypatch.setattr(backend, "WAIT_RECHECK_INTERVAL", 0.2)
    result = celery_app.send_task("interop.add", (1, 2))  # no worker runs it
    started = time.monotonic()
    with finish_silently(interop_dsn, job_id_for(result.id)):
        assert result.get(timeout=20) == 42
    assert time.monotonic() - started < 5
