"""The transport in Celery's event loop (kombu's ``Hub``, ``asynloop``): a prefork worker
whose processes are all busy still answers remote control, as on Redis (issue 25: with
the blocking ``synloop`` it blocked in ``pool.apply_async`` until a process freed).

The hub tests drive the transport as Celery's ``asynloop`` does, in this process: a
notification wakes delivery at once (``polling_interval`` is long here), a channel held at
its prefetch limit takes the next message right after an ack, and a database outage
neither raises out of the loop nor stops delivery once the database is back."""

from __future__ import annotations

import time
from typing import Any, Callable

import psycopg
from kombu import Connection, Consumer, Queue
from kombu.asynchronous import Hub

from chancy.compat.kombu_loop import HubDelivery
from chancy.compat.protocol import job_id_for
from chancy.testing import eventually

from interop_support import ran


def _run_hub(hub: Hub, until: Callable[[], bool], seconds: float) -> float | None:
    """Turn the hub until ``until()`` holds: the seconds it took, or None."""
    started = time.monotonic()
    loop = hub.create_loop()
    while time.monotonic() - started < seconds:
        if until():
            return time.monotonic() - started
        next(loop)
    return time.monotonic() - started if until() else None


class HubConsumer:
    """A kombu consumer of queue ``celery`` on the transport, registered with a hub."""

    def __init__(self, dsn: str, polling_interval: float, prefetch: int = 0, ack: bool = True) -> None:
        self.connection = Connection("chancy+" + dsn, transport_options={"polling_interval": polling_interval})
        self.connection.connect()
        self.hub = Hub()
        self.hub.call_repeatedly(0.05, lambda: None)  # the hub turns often, as a worker's does
        self.connection.register_with_event_loop(self.hub)
        self.received: list[Any] = []
        self.channel = self.connection.channel()
        if prefetch:
            self.channel.basic_qos(0, prefetch, False)
        self.consumer = Consumer(self.channel, [Queue("celery")], accept=["json"],
                                 callbacks=[lambda body, message: self._on_message(body, message, ack)])
        self.consumer.consume()

    def _on_message(self, body: Any, message: Any, ack: bool) -> None:
        self.received.append(message)
        if ack:
            message.ack()

    def run(self, until: Callable[[], bool], seconds: float) -> float | None:
        return _run_hub(self.hub, until, seconds)

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.close()
        self.hub.close()


def test_a_push_wakes_delivery_through_the_listen_socket(interop_dsn, celery_app):
    hub = HubConsumer(interop_dsn, polling_interval=30)
    try:
        hub.run(lambda: False, 0.5)  # settled: the consumer's first round found nothing
        assert hub.received == []
        celery_app.tasks["interop.add"].delay(1, 2)
        took = hub.run(lambda: len(hub.received) == 1, 5)
        assert took is not None and took < 2, took
    finally:
        hub.close()


def test_a_channel_at_its_prefetch_limit_takes_the_next_message_after_an_ack(interop_dsn, celery_app):
    hub = HubConsumer(interop_dsn, polling_interval=30, prefetch=1, ack=False)
    try:
        for i in range(2):
            celery_app.tasks["interop.add"].delay(i, i)
        assert hub.run(lambda: len(hub.received) == 1, 5) is not None
        hub.run(lambda: False, 1)
        assert len(hub.received) == 1  # held by the prefetch limit
        hub.received[0].ack()
        took = hub.run(lambda: len(hub.received) == 2, 5)
        assert took is not None and took < 1, took
    finally:
        hub.close()


def test_a_push_heard_while_checking_the_control_queue_still_wakes_delivery(interop_dsn, celery_app,
                                                                             monkeypatch):
    """A round reads the notifications that came while it checked whether the control
    queue is due: a push among them is not read again from the socket, so the round
    itself must ask for another, not leave it to ``polling_interval``."""
    from kombu import Exchange

    from chancy.compat.kombu import Transport

    due = Transport.transient_due
    pushed: list[Any] = []

    def push_while_checking(transport: Transport, queue: str) -> bool:
        if not pushed and hub.received == [] and hub_ready:
            pushed.append(celery_app.tasks["interop.add"].delay(1, 1))
            time.sleep(0.2)  # its notification has reached the LISTEN connection
        return due(transport, queue)

    hub_ready = False
    monkeypatch.setattr(Transport, "transient_due", push_while_checking)
    hub = HubConsumer(interop_dsn, polling_interval=30)
    control = Queue("node-1.celery.pidbox", Exchange("celery.pidbox", "fanout"), auto_delete=True, expires=10)
    try:
        with Consumer(hub.connection.channel(), [control], no_ack=True, accept=["json"]):
            hub.run(lambda: False, 0.5)  # settled
            hub_ready = True
            hub.connection.transport._hub_delivery._wake()  # a round: the job queue empty, then the control queue
            took = hub.run(lambda: len(hub.received) == 1, 5)
        assert pushed and took is not None and took < 2, took
    finally:
        hub.close()


def test_a_database_outage_does_not_stop_the_loop(interop_dsn, celery_app, monkeypatch):
    """Every connection of the transport is cut: the hub keeps turning (no error out of
    it, no spinning on the dead socket), the LISTEN connection comes back at the next
    interval, and a push then wakes delivery at once again."""
    reads: list[int] = []
    on_readable = HubDelivery.on_readable
    monkeypatch.setattr(HubDelivery, "on_readable", lambda self, fd: reads.append(fd) or on_readable(self, fd))
    hub = HubConsumer(interop_dsn, polling_interval=0.5)
    try:
        celery_app.tasks["interop.add"].delay(1, 1)
        assert hub.run(lambda: len(hub.received) == 1, 5) is not None
        with psycopg.connect(interop_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        reads.clear()
        hub.run(lambda: False, 2)  # the cut is noticed, then the connections come back
        assert len(reads) < 20, reads

        delivery = hub.connection.transport._hub_delivery
        assert delivery._listening is not None and not delivery._listening.closed
        celery_app.tasks["interop.add"].delay(2, 2)
        assert hub.run(lambda: len(hub.received) == 2, 5) is not None
    finally:
        hub.close()


def test_closing_the_connection_unregisters_from_the_hub(interop_dsn):
    hub = HubConsumer(interop_dsn, polling_interval=30)
    delivery = hub.connection.transport._hub_delivery
    hub.run(lambda: False, 0.3)
    assert len(hub.hub.readers) == 2 and delivery._on_tick in hub.hub.on_tick  # the pipe, the LISTEN socket
    hub.consumer.cancel()
    hub.connection.close()
    assert hub.hub.readers == {} and delivery._on_tick not in hub.hub.on_tick and delivery._timer.canceled
    hub.hub.close()


async def test_a_prefork_worker_with_every_process_busy_answers_remote_control(interop_dsn, celery_app,
                                                                                celery_worker):
    """Both processes sleep in a task, two more tasks wait behind them: ``ping``,
    ``active`` and a ``revoke`` are answered at once, not when a process frees (the
    revoked task, still waiting, never runs)."""
    worker = celery_worker(pool="prefork", concurrency=2)
    assert await eventually(lambda: celery_app.control.ping(timeout=0.5), timeout=30), worker.log()
    sleepers = [celery_app.tasks["interop.record"].delay(key, 15) for key in range(4)]
    inspect = celery_app.control.inspect(timeout=2, limit=1)  # limit: return at the first (only) reply
    assert await eventually(lambda: sum(len(tasks) for tasks in (inspect.active() or {}).values()) == 2,
                            timeout=10), worker.log()

    started = time.monotonic()
    replies = inspect.ping()
    answered = time.monotonic() - started
    assert replies and list(replies.values()) == [{"ok": "pong"}], worker.log()
    assert answered < 2, answered
    active = inspect.active()
    running = [task["id"] for tasks in active.values() for task in tasks]
    assert len(running) == 2 and set(running) <= {s.id for s in sleepers}, active
    waiting = [s for s in sleepers if s.id not in running]
    celery_app.control.revoke(waiting[0].id)
    revoked = inspect.revoked()
    assert waiting[0].id in next(iter(revoked.values())), worker.log()
    assert ran(interop_dsn) == []  # all of it while the first two still slept

    kept = [key for key, s in enumerate(sleepers) if s is not waiting[0]]
    assert [sleepers[key].get(timeout=40) for key in kept] == kept
    assert sorted(key for key, _ in ran(interop_dsn)) == kept


def test_an_ack_after_the_outcome_still_names_the_consumer(interop_dsn, celery_app):
    """In the event loop a solo pool acks once the task ran, when the result backend has
    finished the row already: the row keeps its outcome and names the consumer that
    delivered it, as after an earlier ack."""
    sent = celery_app.tasks["interop.add"].delay(1, 2)
    messages: list[Any] = []
    with Connection("chancy+" + interop_dsn, transport_options={"await_results": True}) as connection:
        with Consumer(connection, [Queue("celery")], accept=["json"],
                      callbacks=[lambda body, message: messages.append(message)]):
            connection.drain_events(timeout=5)
            celery_app.backend.mark_as_done(sent.id, 3)
            messages[0].ack()
            messages[0].channel.basic_ack(messages[0].delivery_tag)  # sent again: changes nothing
        consumer = connection.transport.consumer_id
    with psycopg.connect(interop_dsn) as conn:
        row = conn.execute("SELECT state, result, meta->'celery'->>'acked_by' FROM chancy_jobs WHERE id = %s",
                           (str(job_id_for(sent.id)),)).fetchone()
    assert row == ("succeeded", 3, consumer)
