"""Waiting for a result does not depend on hearing the completion notification: a job
finished without one (a notification missed while reconnecting, or shaped differently by
another Chancy version during a rolling deploy) is seen at the waiter's next recheck."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Iterator

import psycopg
from chancy import Chancy, Job, Queue
from chancy.store.pg import job_store


@contextlib.contextmanager
def finish_silently(dsn: str, job_id: object, after: float = 0.3) -> Iterator[None]:
    """Mark the job succeeded ``after`` seconds into the block, sending no notification."""
    def finish() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE chancy_jobs SET state = 'succeeded', result = '42', completed_at = now() "
                         "WHERE id = %s", (job_id,))
    timer = threading.Timer(after, finish)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()


async def test_wait_and_wait_sync_see_a_silent_finish_at_their_recheck(dsn, monkeypatch):
    monkeypatch.setattr(job_store, "WAIT_RECHECK_INTERVAL", 0.2)
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        ref = await app.push(Job("tests.never_run"))
        started = time.monotonic()
        with finish_silently(dsn, ref.id):
            record = await ref.wait(timeout=20)
        assert record.result == 42 and time.monotonic() - started < 5

        ref = await app.push(Job("tests.never_run"))
        started = time.monotonic()
        with finish_silently(dsn, ref.id):
            record = await asyncio.to_thread(app.wait_sync, ref, 20)
        assert record.result == 42 and time.monotonic() - started < 5
