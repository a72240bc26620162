"""Prefetch beside a task rate limit: the gate writes the start of the jobs it admits, so
jobs prefetched behind a running one must still run (they were left ``running``, never
handed over, while the worker asked again and again for a mark of their start)."""

from __future__ import annotations


import pytest

from chancy import JobState, Queue
from chancy.testing import running_worker


#: Task limits this file declares are forgotten after each test (tests/core/conftest.py).
pytestmark = pytest.mark.usefixtures("forget_declared_limits")


@pytest.mark.parametrize("executor", ["thread", "asyncio"])
async def test_admitted_jobs_prefetched_behind_a_running_one_run(make_app, executor):
    app = await make_app(Queue("default", concurrency=1, executor=executor))

    @app.task(rate_limit="1000/s")
    def quick(i):
        return i

    refs = await app.push_many([quick.job(i) for i in range(6)])
    async with running_worker(app, prefetch_multiplier=4):
        records = [await ref.wait(30) for ref in refs]
    assert [(r.state, r.attempts, r.result) for r in records] == [(JobState.SUCCEEDED, 1, i) for i in range(6)]
