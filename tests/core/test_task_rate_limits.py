"""Task rate limits (``rate_limit="5/s"``), observed from the job rows: starts spaced in
every sliding window across workers, no attempt charged for waiting, no head-of-line
blocking of the queue's other tasks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import core_tasks
import pytest

from chancy import ConfigurationError, Job, JobState, Queue
from chancy.queue import QueuePlugin
from chancy.store.memory import MemoryQueue
from chancy.rate_limits import RateLimit, parse
from chancy.testing import eventually, running_worker


#: Task limits this file declares are forgotten after each test (tests/core/conftest.py).
pytestmark = pytest.mark.usefixtures("forget_declared_limits")


def _most_in_any_window(started, seconds):
    window = timedelta(seconds=seconds)
    return max(sum(1 for t in started[i:] if t - first < window) for i, first in enumerate(started))


async def _finished(refs):
    return [await ref.wait(30) for ref in refs]


#: The in-memory queue (for tests) enforces the same limits, counted in this process.
QUEUES = pytest.mark.parametrize("queue_class", [Queue, MemoryQueue])


@QUEUES
async def test_starts_are_spaced_all_succeed_and_waiting_costs_no_attempt(make_app, queue_class):
    app = await make_app(queue_class("default", concurrency=10))

    @app.task(rate_limit="5/s", max_attempts=1)
    def limited_add(a, b):
        return a + b

    refs = await app.push_many([limited_add.job(i, 1) for i in range(20)])
    async with running_worker(app):
        records = await _finished(refs)
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 20
    assert [r.result for r in records] == [i + 1 for i in range(20)]
    assert {r.attempts for r in records} == {1} and all(r.errors == [] for r in records)
    started = sorted(r.started_at for r in records)
    assert _most_in_any_window(started, 1.0) <= 5, [t.isoformat() for t in started]
    assert started[-1] - started[0] >= timedelta(seconds=3)  # 20 at 5/s need four windows


@QUEUES
async def test_an_admitted_job_starts_when_the_gate_counts_it(make_app, queue_class):
    """The window counts a start at the gate, after the claim; the in-memory queue kept
    the claim's time as ``started_at``, so the rows could show one start too many in a
    window (a flaky spacing test)."""
    app = await make_app(queue_class("default"))
    queue = app.queues["default"]
    await app.push(Job(core_tasks.add, args=(1, 2)))
    claimed = await queue.claim("w", 10)
    await asyncio.sleep(0.2)
    verdict = await queue.gate("w", claimed, {claimed[0].func: RateLimit(5, 1.0)})
    assert verdict.admitted == {claimed[0].id}
    started = (await queue.get(claimed[0].id)).started_at
    assert started - claimed[0].started_at >= timedelta(seconds=0.15)


async def test_two_workers_share_one_limit(make_app):
    """Each worker alone can start at most ~3.3 jobs/s (2 slots, 0.6 s jobs), together
    6.7/s: more than the 4/s limit, which must hold for the pair, not for each."""
    first, second = await make_app(Queue("default", concurrency=2)), await make_app(Queue("default", concurrency=2))

    @first.task(rate_limit="4/s")
    async def shared_nap(i):
        await asyncio.sleep(0.6)
        return i

    refs = await first.push_many([shared_nap.job(i) for i in range(12)])
    # No prefetch: a worker holding jobs ahead would leave the other none to share the
    # limit with (the fairness a prefetch gives up, as Celery's -O fair says).
    async with running_worker(first, worker_id="w1", prefetch_multiplier=1), \
            running_worker(second, worker_id="w2", prefetch_multiplier=1):
        records = await _finished(refs)
    assert all(r.state is JobState.SUCCEEDED and r.attempts == 1 for r in records)
    assert {r.taken_by for r in records} == {"w1", "w2"}
    started = sorted(r.started_at for r in records)
    assert _most_in_any_window(started, 1.0) <= 4, [t.isoformat() for t in started]


@QUEUES
async def test_a_limited_backlog_does_not_hold_back_other_tasks_of_its_queue(make_app, queue_class):
    app = await make_app(queue_class("default", concurrency=4))

    @app.task(rate_limit="1/m")
    def once_a_minute(i):
        return i

    backlog = await app.push_many([once_a_minute.job(i) for i in range(40)])
    others = await app.push_many([Job(core_tasks.add, args=[i, i]) for i in range(8)])
    async with running_worker(app):
        assert [r.result for r in await _finished(others)] == [2 * i for i in range(8)]
        records = await eventually(lambda: _all_settled(app, backlog))
    assert sum(r.state is JobState.SUCCEEDED for r in records) == 1
    waiting = [r for r in records if r.state is not JobState.SUCCEEDED]
    assert {r.state for r in waiting} == {JobState.SCHEDULED}
    assert {r.attempts for r in waiting} == {0} and all(r.errors == [] and r.taken_by is None for r in waiting)
    # Each waits for its own turn, a minute apart, in push order.
    due = [r.scheduled_at for r in sorted(waiting, key=lambda r: r.id)]
    assert due == sorted(due) and due[1] - due[0] >= timedelta(seconds=59)


async def test_a_queue_that_cannot_count_starts_runs_limited_jobs_and_says_so(make_app, caplog):
    class Uncounted(MemoryQueue):  # a custom queue without a gate of its own
        gate = QueuePlugin.gate

    app = await make_app(Uncounted("default", concurrency=4))

    @app.task(rate_limit="1/m")
    def rare(i):
        return i

    refs = await app.push_many([rare.job(i) for i in range(3)])
    async with running_worker(app):
        assert [r.result for r in await _finished(refs)] == [0, 1, 2]
    assert "queue 'default' (Uncounted) cannot count task starts" in caplog.text
    assert Queue("q").enforces_rate_limits and MemoryQueue("q").enforces_rate_limits


async def _all_settled(app, refs):
    records = [await ref.get() for ref in refs]
    return records if all(r.state in (JobState.SUCCEEDED, JobState.SCHEDULED) for r in records) else None


@pytest.mark.parametrize("value, expected", [
    ("100/s", RateLimit(100, 1.0)), ("10/m", RateLimit(10, 60.0)), ("1000/h", RateLimit(1000, 3600.0)),
    ("7", RateLimit(7, 1.0)), (3, RateLimit(3, 1.0)), ("0.5/s", RateLimit(1, 2.0)),
    (None, None), (0, None), ("0", None), ("", None),
])
def test_celery_rate_syntax(value, expected):
    assert parse(value) == expected


@pytest.mark.parametrize("value", ["10/d", "ten/m", "-1", "5/", "1/s/s", True, [10]])
def test_a_bad_rate_fails_at_decoration_naming_the_accepted_forms(app, value):
    with pytest.raises(ConfigurationError, match=r"'N/s', 'N/m', 'N/h'"):
        @app.task(rate_limit=value)
        def never_registered():
            pass
