"""Remote control and events through Chancy's broker, as through Redis (the reference):
a stock ``celery worker`` answers ``celery inspect`` and ``app.control``, honours a revoke
broadcast, and sends events (``-E``) that a receiver such as Flower captures. Replies and
events are transient messages: none becomes a job row, and expired ones are pruned."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

import psycopg
import pytest

from broker_support import broker_only_app, broker_url, celery_command, redis_url, wait_for_ping  # noqa: F401
from chancy.migrations import Names
from chancy.testing import eventually


def _job_queues(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT DISTINCT queue, func FROM chancy_jobs").fetchall()


@pytest.mark.parametrize("broker", ["chancy", "redis"])
@pytest.mark.parametrize("pool", ["solo", "prefork"])
async def test_inspect_and_control_reach_a_stock_worker(interop_dsn, celery_worker, request, broker, pool):
    url = broker_url(broker, interop_dsn, request)
    app = broker_only_app(interop_dsn, url, "chancy+" + interop_dsn)
    worker = celery_worker(pool=pool, concurrency=2, app="broker_only_app", INTEROP_BROKER=url)
    replies = wait_for_ping(app)
    assert len(replies) == 1 and list(replies[0].values()) == [{"ok": "pong"}], worker.log()
    node = next(iter(replies[0]))

    # A solo worker answers only between tasks; a prefork one while its children work.
    sleeper = app.tasks["interop.record"].delay(1, 4 if pool == "prefork" else 0)
    if pool == "prefork":
        assert await eventually(lambda: any(task["id"] == sleeper.id for tasks in (app.control.inspect(
            timeout=5, destination=[node]).active() or {}).values() for task in tasks), timeout=20), worker.log()
    else:
        assert sleeper.get(timeout=20) == 1
    assert "pong" in celery_command(interop_dsn, url, "rpc://", "inspect", "ping", "--timeout", "10", "-d", node)
    active = celery_command(interop_dsn, url, "rpc://", "inspect", "active", "--timeout", "10", "-d", node)
    assert node in active and (sleeper.id in active if pool == "prefork" else "empty" in active)
    stats = celery_command(interop_dsn, url, "rpc://", "inspect", "stats", "--timeout", "10", "-d", node)
    assert node in stats and '"pool"' in stats

    queued = app.tasks["interop.add"].apply_async((1, 2), countdown=60)
    app.control.revoke(queued.id, terminate=False)
    inspect = app.control.inspect(timeout=5, destination=[node])
    assert await eventually(lambda: queued.id in (inspect.revoked() or {}).get(node, []), timeout=20), worker.log()
    assert sleeper.get(timeout=20) == 1
    limited = app.control.rate_limit("interop.add", "10/m", destination=[node], reply=True, timeout=5)
    assert limited == [{node: {"ok": "new rate limit set successfully"}}], worker.log()
    if broker == "chancy":  # no reply, ping or broadcast became a job row
        assert sorted(_job_queues(interop_dsn)) == [("celery", "interop.add"), ("celery", "interop.record")]
    app.control.shutdown(destination=[node])
    assert await eventually(lambda: worker.process.poll() is not None, timeout=30), worker.log()
    app.close()


@pytest.mark.parametrize("broker", ["chancy", "redis"])
async def test_events_of_a_worker_started_with_E_reach_a_receiver(interop_dsn, celery_worker, request, broker):
    url = broker_url(broker, interop_dsn, request)
    app = broker_only_app(interop_dsn, url, "chancy+" + interop_dsn)
    seen: list[dict] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        capturing = threading.Thread(target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True)
        capturing.start()
        try:
            worker = celery_worker(pool="prefork", concurrency=2, app="broker_only_app", args=("-E",),
                                   INTEROP_BROKER=url)
            assert wait_for_ping(app), worker.log()
            sent = app.tasks["interop.add"].delay(2, 3)
            assert sent.get(timeout=20) == 5
            assert await eventually(lambda: any(event["type"] == "task-succeeded" and event.get("uuid") == sent.id
                                                for event in list(seen)), timeout=20), (worker.log(), seen)
            kinds = {event["type"] for event in seen if event.get("uuid") == sent.id}
            assert {"task-received", "task-started", "task-succeeded"} <= kinds
        finally:
            receiver.should_stop = True
            capturing.join(timeout=10)
    if broker == "chancy":
        assert _job_queues(interop_dsn) == [("celery", "interop.add")]
    app.close()


def test_transient_messages_expire_and_are_pruned(interop_dsn):
    """Replies nobody reads and events past their time to live do not pile up."""
    from chancy.store.pg.celery_transient import QueueLifetime, TransientSQL

    statements = TransientSQL(Names("chancy_"))
    queue = f"{uuid.uuid4()}.reply.celery.pidbox"
    with psycopg.connect(interop_dsn, autocommit=True) as conn:
        def run(statement):
            cur = conn.execute(statement.query, statement.params)
            return statement.mapper(cur.fetchall() if cur.description else [])

        run(statements.declare(queue, QueueLifetime(expires=10, message_ttl=0.2)))
        run(statements.bind("reply.celery.pidbox", queue, None, queue))
        assert run(statements.put(queue, '{"body": "1"}', None)) is True
        assert run(statements.fanout("reply.celery.pidbox", '{"body": "2"}', None)) == []
        assert run(statements.size(queue)) == 2
        time.sleep(0.3)
        assert run(statements.size(queue)) == 0 and run(statements.take(queue)) is None
        assert run(statements.prune()) == (2, 0)
        assert conn.execute("SELECT count(*) FROM chancy_kombu_messages").fetchone()[0] == 0
        assert run(statements.put("celery", '{"body": "3"}', None)) is False  # not a transient queue
        gone = f"{uuid.uuid4()}.reply.celery.pidbox"  # its client stopped reading long ago
        run(statements.declare(gone, QueueLifetime(expires=0.1, message_ttl=None)))
        time.sleep(0.2)
        assert run(statements.put(gone, '{"body": "late reply"}', None)) is True  # known: no job row
        assert run(statements.size(gone)) == 0  # and dropped, as for a deleted queue


def test_a_busy_consumer_reads_its_control_queue_only_when_a_message_is_announced(
        interop_dsn, celery_app, monkeypatch):
    """A worker's remote-control queue is read when a notification announces a message
    for it (or after ``polling_interval``), not between every two tasks: a query per task
    saved. A broadcast still arrives at once."""
    from kombu import Connection, Consumer, Exchange, Queue

    from chancy.store.pg.celery_transient import TransientSQL

    control = Queue("node-1.celery.pidbox", Exchange("celery.pidbox", "fanout"), auto_delete=True, expires=10)
    reads: list[str] = []
    take = TransientSQL.take
    monkeypatch.setattr(TransientSQL, "take", lambda self, queue: reads.append(queue) or take(self, queue))
    for i in range(30):
        celery_app.tasks["interop.add"].delay(i, i)
    tasks, commands = [], []
    with Connection("chancy+" + interop_dsn, transport_options={"polling_interval": 5}) as connection:
        with Consumer(connection, [Queue("celery")], accept=["json"],
                      callbacks=[lambda body, message: (tasks.append(body), message.ack())]), \
                Consumer(connection.channel(), [control], no_ack=True, accept=["json"],
                         callbacks=[lambda body, message: commands.append(body)]):
            while len(tasks) < 30:
                connection.drain_events(timeout=5)
            assert reads.count(control.name) <= 2, reads
            with Connection("chancy+" + interop_dsn) as other:
                other.Producer().publish({"method": "ping"}, exchange=control.exchange, declare=[control.exchange])
            started = time.monotonic()
            while not commands and time.monotonic() - started < 4:
                with contextlib.suppress(socket.timeout):
                    connection.drain_events(timeout=0.5)
    assert commands == [{"method": "ping"}] and time.monotonic() - started < 4


def test_a_push_heard_while_checking_the_control_queue_still_wakes_the_consumer(interop_dsn, celery_app, monkeypatch):
    """Checking whether the control queue is due reads the notifications that have come;
    a push among them must still wake the consumer, not wait out ``polling_interval``."""
    from kombu import Connection, Consumer, Exchange, Queue

    from chancy.compat.kombu import Transport

    control = Queue("node-1.celery.pidbox", Exchange("celery.pidbox", "fanout"), auto_delete=True, expires=10)
    due = Transport.transient_due
    pushed: list = []

    def push_while_checking(transport, queue):
        if not pushed:  # after the job queue was found empty: the race
            transport._wait_for_push(0)  # LISTENing
            pushed.append(celery_app.tasks["interop.add"].delay(1, 1))
            time.sleep(0.2)  # its notification has reached the LISTEN connection
        return due(transport, queue)

    monkeypatch.setattr(Transport, "transient_due", push_while_checking)
    tasks: list = []
    with Connection("chancy+" + interop_dsn, transport_options={"polling_interval": 5}) as connection:
        with Consumer(connection, [Queue("celery")], accept=["json"],
                      callbacks=[lambda body, message: (tasks.append(body), message.ack())]), \
                Consumer(connection.channel(), [control], no_ack=True, accept=["json"]):
            started = time.monotonic()
            while not tasks and time.monotonic() - started < 10:
                with contextlib.suppress(socket.timeout):
                    connection.drain_events(timeout=10)
            waited = time.monotonic() - started
    assert pushed and tasks and waited < 2, waited
