"""``app.send_task(name)`` sends ``ignore_result`` unset (None): the worker's task decides,
as on Redis (Celery's ``test_send_task_without_ignore_result_uses_task_ignore_result``).
The transport rebuilt the message from the row with ``False``, so a task declared
``ignore_result=True`` stored its result and read SUCCESS where Redis reads PENDING."""

from __future__ import annotations

from kombu import Connection, Consumer, Queue

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually

from interop_support import job_rows


def test_the_delivered_message_keeps_ignore_result_as_sent(interop_dsn, celery_app):
    unset = celery_app.send_task("interop.add", (1, 2))
    ignored = celery_app.send_task("interop.add", (1, 2), ignore_result=True)
    kept = celery_app.tasks["interop.add"].delay(1, 2)  # the task's own value, False
    headers = {}
    with Connection("chancy+" + interop_dsn) as connection:
        with Consumer(connection, [Queue("celery")], accept=["json"],
                      callbacks=[lambda body, message: (headers.update({message.headers["id"]: message.headers}),
                                                        message.ack())]):
            while len(headers) < 3:
                connection.drain_events(timeout=5)
    assert headers[unset.id]["ignore_result"] is None
    assert headers[ignored.id]["ignore_result"] is True
    assert headers[kept.id]["ignore_result"] is False


async def test_send_task_leaves_ignore_result_to_the_workers_task(interop_dsn, celery_app, celery_worker):
    worker = celery_worker(pool="solo", app="ignore_result_app")
    ignored = celery_app.send_task("interop.add_ignored", (1, 2))
    stored = celery_app.send_task("interop.add", (1, 2))
    assert stored.get(timeout=30) == 3, worker.log()
    row = f"id = '{job_id_for(ignored.id)}'"
    assert await eventually(lambda: [r[1] for r in job_rows(interop_dsn, row)] == ["succeeded"], timeout=20), \
        worker.log()
    meta = celery_app.backend.get_task_meta(ignored.id)
    assert (meta["status"], meta["result"]) == ("PENDING", None)
