"""A row a ``Task.replace()`` replacement took over keeps counting its deliveries and
notes how many came before it (``meta["celery"]["retries_base"]``, see
:mod:`chancy.store.pg.celery_transport`); a Chancy-native worker running it must report
Celery's ``request.retries`` (and ``AsyncResult.retries``) from the replacement's own
deliveries, as a stock Celery worker is told through the message
(:func:`chancy.compat.protocol.celery_retries`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest
from celery.result import AsyncResult as CeleryAsyncResult

from chancy.compat.app.task import Context
from chancy.compat.protocol import message_from_record
from chancy.compat import Celery as CompatCelery, worker_app
from chancy.compat.result import AsyncResult as CompatAsyncResult
from chancy.job import JobRecord, JobState
from chancy.testing import running_worker


def _claimed_row(attempts: int, retries_base: int | None) -> JobRecord:
    now = datetime.now(timezone.utc)
    celery = {"task_id": str(uuid.uuid4())} | ({"retries_base": retries_base} if retries_base is not None else {})
    return JobRecord(
        id=uuid.uuid4(), queue="celery", func="interop.add", args=(1, 2), kwargs={}, priority=0,
        state=JobState.RUNNING, attempts=attempts, max_attempts=10, scheduled_at=now, expires_at=None,
        created_at=now, started_at=now, completed_at=None, taken_by="worker-1", unique_key=None, limits=(),
        backoff=None, meta={"celery": celery}, result=None, errors=[])


@pytest.mark.parametrize(("attempts", "retries_base", "retries"), [
    (3, 2, 0),     # the replacement's first delivery, after two of the replaced task
    (5, 2, 2),     # the replacement retried twice
    (3, None, 2),  # never replaced: every earlier delivery is a retry
])
def test_a_chancy_worker_counts_retries_from_the_replacement(attempts, retries_base, retries):
    record = _claimed_row(attempts, retries_base)
    assert Context.from_record(record).retries == retries
    # what a stock Celery worker is told for the same row
    assert message_from_record(record, accept=["json"])["headers"]["retries"] == retries


@pytest.mark.parametrize("pool", ["threads", "solo"])
async def test_a_replacement_run_by_a_chancy_worker_starts_its_retries_at_0(interop_dsn, celery_app,
                                                                            celery_worker, pool):
    """A stock Celery worker replaces a task by one only a Chancy worker runs (queue
    ``native``): the replacement sees ``request.retries == 0``, as it would on Celery."""
    native = CompatCelery("native", broker=interop_dsn)
    native.conf.task_default_queue = "native"  # its worker leaves queue "celery" to stock Celery
    native.task(name="retries.report", bind=True)(lambda self: self.request.retries)
    worker_app(native, queues=["native"], pool=pool, concurrency=1)
    celery_worker(pool="solo", app="ignore_app")
    replaced = celery_app.signature("replace.elsewhere", ("native",)).delay()
    try:
        async with running_worker(native.chancy, heartbeat_interval=0.5):
            assert await asyncio.to_thread(CeleryAsyncResult(replaced.id, app=celery_app).get, timeout=60) == 0
        assert CompatAsyncResult(replaced.id, app=native).retries == 0
    finally:
        await native.chancy.close()
