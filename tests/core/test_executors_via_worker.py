"""Every executor behind a real worker: results, failures, limits, process recycling."""

import pytest

import core_tasks
from chancy import Job, JobState, Limit, Queue
from chancy.executors.process import ProcessExecutor
from chancy.testing import running_worker

EXECUTORS = ["asyncio", "thread", "process"]


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_success_and_failure_on_each_executor(make_app, executor):
    app = await make_app(Queue("default", concurrency=2, executor=executor))
    ok = await app.push(core_tasks.add, 2, 2)
    bad = await app.push(core_tasks.fail, "on " + executor)
    async with running_worker(app):
        assert (await ok.wait(timeout=20)).result == 4
        failed = await bad.wait(timeout=20)
    assert failed.state is JobState.FAILED
    assert f"ValueError: on {executor}" in failed.traceback


@pytest.mark.parametrize("executor", ["asyncio", "process"])
async def test_time_limit_stops_the_job(make_app, executor):
    app = await make_app(Queue("default", concurrency=1, executor=executor))
    task = core_tasks.async_sleep if executor == "asyncio" else core_tasks.sleep
    ref = await app.push(Job(task, args=[30], limits=[Limit(Limit.Type.TIME, 0.5)]))
    async with running_worker(app):
        record = await ref.wait(timeout=15)
    assert record.state is JobState.FAILED
    assert "JobTimeoutError" in record.errors[0]["type"]
    assert (record.completed_at - record.started_at).total_seconds() < 10


async def test_memory_limit_in_process_executor(make_app):
    app = await make_app(Queue("default", concurrency=1, executor="process"))
    ref = await app.push(Job(core_tasks.allocate, args=[400], limits=[Limit(Limit.Type.MEMORY, 100 * 1024**2)]))
    async with running_worker(app):
        record = await ref.wait(timeout=30)
    assert record.state is JobState.FAILED
    assert "JobMemoryError" in record.errors[0]["type"]


async def test_process_executor_recycles_children(make_app):
    app = await make_app(
        Queue("default", concurrency=1,
              executor=lambda queue: ProcessExecutor(queue, maximum_jobs_per_worker=1)),
    )
    refs = await app.push_many([Job(core_tasks.getpid) for _ in range(3)])
    async with running_worker(app):
        pids = [(await ref.wait(timeout=30)).result for ref in refs]
    assert len(set(pids)) == 3
