"""A stock Celery task that raises ``Ignore`` (or ``Reject``) stores no state, so its
row, which the Chancy result backend would otherwise finish, must be finished anyway
once the task ended: else it stays running until its worker stops, and the next worker
runs the task again, where Redis (the message acked and gone) runs it once (issue 25).

Under every pool, one worker (``-A ignore_app``) runs every kind — ``Ignore`` with early
and late acks, after an ``update_state``, ``Reject`` with and without requeue, early and
late — then is stopped (SIGTERM) and another started: each ran as often as on Redis, and
reads as on Redis. The same run on Redis (broker and backend) is the reference."""

from __future__ import annotations

import asyncio
import signal

import pytest
from celery.result import AsyncResult

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually

from broker_support import redis_url  # noqa: F401 - a fixture
from interop_support import job_rows, ran

#: task name → (key, runs, state) as on Redis. Celery stores FAILURE for a Reject
#: without requeue; a requeue after an early ack has nothing to put back.
EXPECTED = {
    "ignore.early": (1, 1, "PENDING"),
    "ignore.late": (2, 1, "PENDING"),
    "ignore.after_progress": (3, 1, "PROGRESS"),
    "reject.requeue_early": (4, 1, "PENDING"),
    "reject.requeue_late": (5, 2, "SUCCESS"),
    "reject.drop_early": (6, 1, "FAILURE"),
    "reject.drop_late": (7, 1, "FAILURE"),
}
SENTINEL = 100


def _unfinished(dsn: str, ids: list[str]) -> list[tuple]:
    wanted = ", ".join(f"'{job_id_for(task_id)}'" for task_id in ids)
    return [row for row in job_rows(dsn, f"id IN ({wanted})")
            if row[1] not in ("succeeded", "failed", "cancelled")]


def _runs(dsn: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for key, _ in ran(dsn):
        counts[key] = counts.get(key, 0) + 1
    return counts


def _ran_all(dsn: str) -> bool:
    runs = _runs(dsn)
    return all(runs.get(key, 0) >= times for key, times, _ in EXPECTED.values())


@pytest.mark.parametrize(("pool", "broker"), [
    ("solo", "chancy"), ("prefork", "chancy"), ("threads", "chancy"), ("solo", "redis"),
])
async def test_ignored_and_rejected_tasks_run_as_often_as_on_redis(interop_dsn, celery_app, celery_worker,
                                                                   pool, broker, request):
    env = {}
    if broker == "redis":
        env["INTEROP_REDIS"] = request.getfixturevalue("redis_url")
        celery_app.conf.update(broker_url=env["INTEROP_REDIS"], result_backend=env["INTEROP_REDIS"])
    first = celery_worker(pool=pool, concurrency=2, app="ignore_app", **env)
    sent = {name: celery_app.signature(name, (key,)).delay() for name, (key, _, _) in EXPECTED.items()}
    ids = [result.id for result in sent.values()]
    if broker == "chancy":
        await eventually(lambda: not _unfinished(interop_dsn, ids), timeout=60,
                         interval=0.2, message="every row finished")
    else:
        await eventually(lambda: _ran_all(interop_dsn), timeout=60, interval=0.2, message="every task ran")

    first.process.send_signal(signal.SIGTERM)  # a deploy: warm shutdown, then a new worker
    await asyncio.to_thread(first.process.wait, 30)
    second = celery_worker(pool=pool, concurrency=2, app="ignore_app", **env)
    sentinel = celery_app.signature("interop.record", (SENTINEL,)).delay()
    assert await asyncio.to_thread(sentinel.get, timeout=60) == SENTINEL, second.log()

    runs = _runs(interop_dsn)
    assert {name: runs.get(key, 0) for name, (key, _, _) in EXPECTED.items()} == \
        {name: times for name, (_, times, _) in EXPECTED.items()}
    states = {name: AsyncResult(result.id, app=celery_app).state for name, result in sent.items()}
    assert states == {name: state for name, (_, _, state) in EXPECTED.items()}
    assert AsyncResult(sent["ignore.early"].id, app=celery_app).result is None
    assert AsyncResult(sent["ignore.after_progress"].id, app=celery_app).info == {"step": 1}
    assert AsyncResult(sent["reject.requeue_late"].id, app=celery_app).result == 5
