"""Rows a consumer claims ahead: a round claims as many rows as the consumer's prefetch
limit leaves room for and hands them out one at a time. They run under the consumer as a
delivered row does, so a worker killed with -9 loses none of them; a consumer that closes
puts back those it never handed out, their attempt given back. On Celery's event loop,
acks that leave the row to the result backend are gathered and sent with the next claim,
or by a timer when no claim follows."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from celery.result import AsyncResult
from kombu import Connection, Consumer, Queue
from kombu.asynchronous import Hub

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually

from interop_support import job_rows, ran


def _rows(dsn: str, task_ids: list[str]) -> dict[str, tuple]:
    """``task id -> (state, attempts, taken_by, redelivered, acked_by)``."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, state, attempts, taken_by, meta->'celery'->>'redelivered', meta->'celery'->>'acked_by'"
            " FROM chancy_jobs WHERE id = ANY(%s)", ([job_id_for(t) for t in task_ids],)).fetchall()
    by_job = {str(job_id): rest for job_id, *rest in rows}
    return {task_id: tuple(by_job[str(job_id_for(task_id))]) for task_id in task_ids}


async def test_a_killed_worker_loses_none_of_the_rows_it_claimed(interop_dsn, celery_app, celery_worker):
    record = celery_app.tasks["interop.record"]
    sent = [record.delay(key, 60) for key in range(12)]
    victim = celery_worker(pool="prefork", concurrency=1, INTEROP_PREFETCH="8")
    await eventually(lambda: len(job_rows(interop_dsn, "state = 'running'")) >= 2, timeout=20,
                     message="the worker claimed several rows")
    await asyncio.sleep(0.5)  # delivered into the worker's reserve; the first one runs
    held = job_rows(interop_dsn, "state = 'running'")
    victim.kill()
    assert 2 <= len(held) <= 8 and len({taken_by for _, _, _, taken_by, _ in held}) == 1, held
    assert ran(interop_dsn) == []
    with psycopg.connect(interop_dsn, autocommit=True) as conn:  # let the runs finish at once
        conn.execute("UPDATE chancy_jobs SET args = jsonb_set(args, '{1}', '0')")
    celery_worker(pool="solo")  # recovers the dead consumer's rows and runs everything
    for result in sent:
        await asyncio.to_thread(AsyncResult(result.id, app=celery_app).get, timeout=30)
    assert sorted(key for key, _ in ran(interop_dsn)) == list(range(12))  # each once


def test_a_closing_consumer_puts_back_the_rows_it_claimed_ahead(interop_dsn, celery_app):
    sent = [celery_app.tasks["interop.add"].delay(i, i).id for i in range(6)]
    received: list[Any] = []
    with Connection("chancy+" + interop_dsn, transport_options={"polling_interval": 0.2}) as connection:
        channel = connection.channel()
        channel.basic_qos(0, 4, False)
        with Consumer(channel, [Queue("celery")], accept=["json"],
                      callbacks=[lambda body, message: received.append(message)]):
            connection.drain_events(timeout=5)
            rows = _rows(interop_dsn, sent)
            assert len(received) == 1
            assert sorted(state for state, *_ in rows.values()) == ["pending"] * 2 + ["running"] * 4  # one claim
            channel.close()
    delivered = received[0].headers["id"]
    after = _rows(interop_dsn, sent)
    # The delivered one is requeued as kombu restores it; the others go back as they were.
    assert after.pop(delivered)[:4] == ("pending", 0, None, "true")
    assert set(after.values()) == {("pending", 0, None, None, None)}


def test_acks_gathered_on_the_event_loop_are_sent_without_a_claim(interop_dsn, celery_app):
    """An ack leaving the row to the result backend waits for the next claim to carry
    it; with none coming (the consumer holds three of its four prefetched messages, too
    many to claim again), a timer sends it within moments."""
    sent = [celery_app.tasks["interop.add"].delay(i, i).id for i in range(4)]
    connection = Connection("chancy+" + interop_dsn, transport_options={"polling_interval": 30,
                                                                       "await_results": True})
    connection.connect()
    hub = Hub()
    hub.call_repeatedly(0.05, lambda: None)  # the hub turns often, as a worker's does
    connection.register_with_event_loop(hub)
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(message)
        if len(received) == 1:
            message.ack()

    channel = connection.channel()
    channel.basic_qos(0, 4, False)
    consumer = Consumer(channel, [Queue("celery")], accept=["json"], callbacks=[on_message])
    consumer.consume()
    loop = hub.create_loop()
    try:
        while len(received) < 4:
            next(loop)
        acked = received[0].headers["id"]
        for _ in range(10):  # a few turns of the hub (its timer every 0.05 s)
            next(loop)
        rows = _rows(interop_dsn, sent)
        consumer_id = connection.transport.consumer_id
        assert rows.pop(acked) == ("running", 1, consumer_id, None, consumer_id)
        assert set(rows.values()) == {("running", 1, consumer_id, None, None)}
    finally:
        consumer.cancel()
        connection.close()
        hub.close()
