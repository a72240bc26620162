"""A revoke broadcast through Chancy's transport leaves alone a task another broker's
worker has started (its state reached Chancy's result backend, so a row exists for it):
without ``terminate`` its state stays the one that worker reported, as on Redis, while
a task that has not started is revoked."""

from __future__ import annotations

import asyncio
import uuid

from broker_support import wait_for_ping


async def test_a_revoke_keeps_the_state_of_a_task_started_elsewhere(celery_app, celery_worker):
    worker = celery_worker(pool="prefork")
    assert await asyncio.to_thread(wait_for_ping, celery_app), worker.log()
    backend = celery_app.backend
    for state in ("STARTED", "PROGRESS"):
        started, not_started = str(uuid.uuid4()), str(uuid.uuid4())
        backend.store_result(started, {"hostname": "other@host"}, state)
        replies = await asyncio.to_thread(celery_app.control.revoke, [started, not_started], reply=True,
                                          timeout=20, limit=1)
        assert replies, worker.log()
        assert backend.get_state(started) == state
        assert backend.get_state(not_started) == "REVOKED"
        await asyncio.to_thread(celery_app.control.revoke, started, terminate=True, reply=True, timeout=20, limit=1)
        assert backend.get_state(started) == "REVOKED"  # terminate: no longer left to that worker
