"""The three executors on their own (no database): outcomes, slots, limits, cancel, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

import executor_tasks
from chancy.execution import Outcome
from chancy.executors._slots import SlotExecutor
from chancy.executors.asyncio import AsyncExecutor
from chancy.executors.process import ProcessExecutor
from chancy.executors.thread import ThreadExecutor
from chancy.job import JobRecord, JobState, Limit, new_job_id, task_name
from chancy.store.memory import MemoryQueue
from chancy.testing import eventually

EXECUTORS = {"asyncio": AsyncExecutor, "thread": ThreadExecutor, "process": ProcessExecutor}
#: A task that writes a file after some seconds, in a form each executor can stop.
SLOW_WRITER = {
    "asyncio": executor_tasks.async_write_later,
    "thread": executor_tasks.write_later,
    "process": executor_tasks.write_later,
}
MB = 1024 * 1024


def make_record(func: Callable[..., Any], *args: Any, limits: tuple[Limit, ...] = (), **kwargs: Any) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(
        id=new_job_id(), queue="test", func=task_name(func), args=args, kwargs=kwargs, priority=0,
        state=JobState.RUNNING, attempts=1, max_attempts=1, scheduled_at=now, expires_at=None,
        created_at=now, started_at=now, completed_at=None, taken_by="test", unique_key=None,
        limits=limits, backoff=None, meta={}, result=None, errors=[],
    )


def time_limit(seconds: float) -> tuple[Limit, ...]:
    return (Limit(Limit.Type.TIME, seconds),)


class Harness:
    """An executor and every outcome it reported, with the thread it was reported on."""

    def __init__(self, executor: SlotExecutor) -> None:
        self.executor = executor
        self.loop_thread = threading.get_ident()
        self.reports: dict[uuid.UUID, list[int]] = {}

    def submit(self, record: JobRecord) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        threads: list[int] = []

        def on_outcome(outcome: Outcome) -> None:
            threads.append(threading.get_ident())
            if not future.done():
                future.set_result(outcome)

        self.executor.submit(record, on_outcome)
        self.reports[record.id] = threads
        return future

    async def run(self, record: JobRecord, timeout: float = 10) -> Outcome:
        return await asyncio.wait_for(self.submit(record), timeout)

    def check_reports(self) -> None:
        for job_id, threads in self.reports.items():
            assert threads == [self.loop_thread], f"job {job_id}: reported on threads {threads}"


@pytest.fixture(params=list(EXECUTORS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make(kind: str) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """``await make(concurrency, **options)``: a started executor of the test's kind,
    stopped afterwards, and checked to have reported each job once, on the loop thread."""
    harnesses: list[Harness] = []

    async def factory(concurrency: int = 1, **options: Any) -> Harness:
        if kind == "process":  # a slot per job, as the other executors (batches: test_process_batch_*)
            options.setdefault("depth", 1)
        executor = EXECUTORS[kind](MemoryQueue("test", concurrency=concurrency), **options)
        await executor.start()
        harnesses.append(Harness(executor))
        return harnesses[-1]

    yield factory
    for harness in harnesses:
        await harness.executor.stop(0)
        harness.check_reports()


def started(path: Path) -> Callable[[], bool]:
    return lambda: Path(f"{path}.started").exists()


def assert_failure(outcome: Outcome, error_type: str, *, final: bool = False, cancelled: bool = False) -> None:
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error["type"] == error_type, outcome.error
    assert (outcome.final, outcome.cancelled) == (final, cancelled)


# --- every executor -------------------------------------------------------------------------
async def test_success(make):
    harness = await make()
    assert (await harness.run(make_record(executor_tasks.add, 2, 3))).result_json == "5"
    assert (await harness.run(make_record(executor_tasks.async_add, a=1, b=1))).result_json == "2"
    assert harness.executor.free_slots == 1


async def test_failure_records_the_traceback(make):
    harness = await make()
    outcome = await harness.run(make_record(executor_tasks.fail, "boom"))
    assert_failure(outcome, "builtins.ValueError")
    assert "in fail" in outcome.error["traceback"]
    assert "ValueError: boom" in outcome.error["traceback"]


async def test_concurrency_is_honoured(make, tmp_path):
    harness = await make(concurrency=2)
    gate = str(tmp_path / "gate")
    records = [make_record(executor_tasks.wait_for_file, gate) for _ in range(2)]
    futures = [harness.submit(record) for record in records]
    assert harness.executor.free_slots == 0
    assert harness.executor.running == {record.id for record in records}
    with pytest.raises(RuntimeError, match="no free slot"):
        harness.submit(make_record(executor_tasks.add, 1, 1))
    Path(gate).touch()
    for outcome in await asyncio.wait_for(asyncio.gather(*futures), 10):
        assert outcome.result_json == '"released"'
    assert harness.executor.free_slots == 2 and harness.executor.running == set()


async def test_time_limit_stops_the_job(make, kind, tmp_path):
    harness = await make()
    path = tmp_path / "out"
    began = time.monotonic()
    outcome = await harness.run(make_record(SLOW_WRITER[kind], str(path), 5, limits=time_limit(0.5)))
    assert time.monotonic() - began < 2.5
    assert_failure(outcome, "chancy.errors.JobTimeoutError")
    assert "time limit of 0.5s" in outcome.error["message"]
    if kind == "thread":  # the traceback shows where the injected exception stopped the job
        assert "in write_later" in outcome.error["traceback"]
    await eventually(lambda: harness.executor.free_slots == 1, timeout=3)
    assert not path.exists()  # the job has really ended without writing
    assert (await harness.run(make_record(executor_tasks.add, 1, 2))).result_json == "3"


async def test_cancel(make, kind, tmp_path):
    harness = await make()
    path = tmp_path / "out"
    record = make_record(SLOW_WRITER[kind], str(path), 5)
    future = harness.submit(record)
    await eventually(started(path), timeout=10)
    assert harness.executor.cancel(record.id)
    outcome = await asyncio.wait_for(future, 3)
    assert_failure(outcome, "chancy.errors.JobCancelledError", final=True, cancelled=True)
    assert not harness.executor.cancel(record.id)
    assert not harness.executor.cancel(uuid.uuid4())
    await eventually(lambda: harness.executor.free_slots == 1, timeout=3)
    assert not path.exists()


async def test_stop_lets_running_jobs_finish(make, tmp_path):
    harness = await make()
    path = tmp_path / "out"
    future = harness.submit(make_record(executor_tasks.write_later, str(path), 0.3))
    await eventually(started(path), timeout=10)
    await asyncio.wait_for(harness.executor.stop(timeout=10), 10)
    assert future.done() and future.result().result_json == '"written"'
    with pytest.raises(RuntimeError, match="stopping"):
        harness.submit(make_record(executor_tasks.add, 1, 1))


@pytest.mark.parametrize("second_stop", [False, True], ids=["after-timeout", "second-stop"])
async def test_stop_hard(make, kind, tmp_path, second_stop):
    """After the timeout, or when a second stop(0) comes while the first waits (the
    worker's second Ctrl-C), running jobs are stopped and reported as retryable failures."""
    harness = await make()
    path = tmp_path / "out"
    future = harness.submit(make_record(SLOW_WRITER[kind], str(path), 5))
    await eventually(started(path), timeout=10)
    began = time.monotonic()
    if second_stop:
        graceful = asyncio.ensure_future(harness.executor.stop(timeout=30))
        await asyncio.sleep(0.05)  # let the graceful stop start waiting
        await asyncio.wait_for(asyncio.gather(harness.executor.stop(0), graceful), 5)
    else:
        await asyncio.wait_for(harness.executor.stop(timeout=0.2), 5)
    assert time.monotonic() - began < 2.5
    outcome = future.result()
    assert_failure(outcome, "chancy.errors.JobCancelledError")  # not final: the job is retried
    assert "worker stopped" in outcome.error["message"]
    await eventually(lambda: harness.executor.free_slots == 1, timeout=3)
    assert not path.exists()


# --- asyncio and thread ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["asyncio", "thread"])
async def test_memory_limit_is_not_supported_and_warned_once(make, kind, caplog):
    harness = await make()
    limits = (Limit(Limit.Type.MEMORY, 10 * MB),)
    with caplog.at_level(logging.WARNING, logger="chancy.executors"):
        for _ in range(2):
            assert (await harness.run(make_record(executor_tasks.add, 1, 1, limits=limits))).succeeded
    warnings = [r.getMessage() for r in caplog.records if "memory limit" in r.getMessage()]
    assert len(warnings) == 1 and "executor_tasks.add" in warnings[0]


@pytest.mark.parametrize("kind", ["asyncio"])
async def test_asyncio_reports_a_threaded_timeout_but_holds_the_slot(make, tmp_path):
    """A plain function runs in a thread nothing can stop: reported at the deadline, the
    slot stays occupied until the thread ends (and the job does write its file)."""
    harness = await make()
    path = tmp_path / "out"
    outcome = await harness.run(make_record(executor_tasks.write_later, str(path), 1, limits=time_limit(0.2)))
    assert_failure(outcome, "chancy.errors.JobTimeoutError")
    assert harness.executor.free_slots == 0 and harness.executor.running == set()
    await eventually(lambda: harness.executor.free_slots == 1, timeout=5)
    assert path.exists()


@pytest.mark.parametrize("kind", ["thread"])
async def test_thread_jobs_that_end_together_are_each_reported_even_if_one_report_fails(make, tmp_path):
    """Jobs whose threads ended meanwhile are reported in one turn of the loop: an outcome
    callback that raises is handed to the loop's exception handler, and the others are
    still reported."""
    harness = await make(2)
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: handled.append(context))
    gates = [tmp_path / "first", tmp_path / "second"]
    reported: list[uuid.UUID] = []

    def failing(outcome: Outcome) -> None:
        raise RuntimeError("the callback failed")

    first, second = (make_record(executor_tasks.wait_for_file, str(gate)) for gate in gates)
    harness.executor.submit(first, failing)
    harness.executor.submit(second, lambda outcome: reported.append(outcome.job_id))
    try:
        await asyncio.sleep(0.2)  # both threads wait for their gate
        for gate in gates:  # the loop is busy while both end, in this order: one batch, the failing one first
            gate.touch()
            time.sleep(0.3)
        await eventually(lambda: reported == [second.id], timeout=5)
    finally:
        loop.set_exception_handler(None)
    assert [type(context["exception"]) for context in handled] == [RuntimeError]


@pytest.mark.parametrize("kind", ["thread"])
async def test_thread_cannot_interrupt_a_blocking_call(make, tmp_path):
    """The injected exception waits for time.sleep to return: the timeout is reported after
    the grace period, the slot is held until the call returns, and the job stops then."""
    harness = await make()
    harness.executor.grace = 0.2
    path = tmp_path / "out"
    began = time.monotonic()
    outcome = await harness.run(make_record(executor_tasks.blocking_write_later, str(path), 1.5,
                                            limits=time_limit(0.2)))
    assert_failure(outcome, "chancy.errors.JobTimeoutError")
    assert time.monotonic() - began < 1.2
    assert harness.executor.free_slots == 0
    await eventually(lambda: harness.executor.free_slots == 1, timeout=5)
    assert not path.exists()


# --- process ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["process"])
async def test_process_memory_limit_kills_the_child(make):
    harness = await make()
    limits = (Limit(Limit.Type.MEMORY, 100 * MB),)
    outcome = await harness.run(make_record(executor_tasks.allocate, 300, 5, limits=limits), timeout=5)
    assert_failure(outcome, "chancy.errors.JobMemoryError")
    assert "over its limit of 100 MiB" in outcome.error["message"]
    used = int(outcome.error["message"].split("used ")[1].split(" MiB")[0])
    assert 100 < used <= 310
    assert (await harness.run(make_record(executor_tasks.add, 1, 1))).succeeded


@pytest.mark.parametrize("kind", ["process"])
async def test_process_recycles_children(make):
    harness = await make(maximum_jobs_per_worker=1)
    pids = [(await harness.run(make_record(executor_tasks.getpid))).result_json for _ in range(3)]
    assert len(set(pids)) == 3 and str(os.getpid()) not in pids


@pytest.mark.parametrize("kind", ["process"])
async def test_process_children_see_the_environment_their_worker_has_now(make, monkeypatch):
    """Children fork from a fork server started once per process; they must still see the
    worker's environment as it is when they start, as spawned children did."""
    first = await make()  # starts the fork server, if none yet
    monkeypatch.setenv("CHANCY_TEST_CHILD_ENV", "set-after-the-fork-server-started")
    assert (await first.run(make_record(executor_tasks.environ_value, "CHANCY_TEST_CHILD_ENV"))).result_json in (
        "null", '"set-after-the-fork-server-started"')  # its child may have started before or after
    later = await make()
    outcome = await later.run(make_record(executor_tasks.environ_value, "CHANCY_TEST_CHILD_ENV"))
    assert outcome.result_json == '"set-after-the-fork-server-started"'


@pytest.mark.parametrize("kind", ["process"])
async def test_process_child_death_is_reported_and_replaced(make):
    harness = await make()
    outcome = await harness.run(make_record(executor_tasks.exit_now, 3))
    assert_failure(outcome, "chancy.executors.process.ChildDiedError")
    assert "exited with code 3" in outcome.error["message"]
    pid = int((await harness.run(make_record(executor_tasks.getpid))).result_json)
    future = harness.submit(make_record(executor_tasks.wait_for_file, "/nonexistent"))
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    outcome = await asyncio.wait_for(future, 5)
    assert_failure(outcome, "chancy.executors.process.ChildDiedError")
    assert "was killed by SIGKILL" in outcome.error["message"]
    assert (await harness.run(make_record(executor_tasks.add, 1, 1))).succeeded


@pytest.mark.parametrize("kind", ["process"])
async def test_process_children_ignore_sigint_and_may_start_processes(make):
    harness = await make()
    pid = int((await harness.run(make_record(executor_tasks.getpid))).result_json)
    os.kill(pid, signal.SIGINT)
    assert (await harness.run(make_record(executor_tasks.start_a_process))).result_json == "0"
    assert (await harness.run(make_record(executor_tasks.getpid))).result_json == str(pid)


CHILD_OF_A_DOOMED_WORKER = """
import asyncio, executor_tasks, test_executors
from chancy.executors.process import ProcessExecutor
from chancy.store.memory import MemoryQueue

async def main():
    executor = ProcessExecutor(MemoryQueue("test"))
    await executor.start()
    ready = asyncio.get_running_loop().create_future()
    executor.submit(test_executors.make_record(executor_tasks.getpid), ready.set_result)
    pid = (await ready).result_json
    # Keep the child busy, so that only the parent-death signal can end it.
    executor.submit(test_executors.make_record(executor_tasks.wait_for_file, "/nonexistent", 60), print)
    print(pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_process_children_die_with_the_worker():
    worker = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_DOOMED_WORKER], stdout=subprocess.PIPE,
                              cwd=Path(__file__).parent, text=True)
    try:
        child = int(await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 20))
    finally:
        worker.kill()
        worker.wait()

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(gone, timeout=5)


# --- process, several jobs per child (depth) ----------------------------------------------------
@pytest.mark.parametrize("kind", ["process"])
async def test_process_batch_queued_jobs_run_in_order_and_a_cancelled_one_never_runs(make, tmp_path):
    harness = await make(depth=4)
    gate = tmp_path / "gate"
    held = harness.submit(make_record(executor_tasks.wait_for_file, str(gate)))
    queued = [make_record(executor_tasks.write_later, str(tmp_path / f"w{i}"), 0) for i in range(3)]
    futures = [harness.submit(record) for record in queued]
    assert harness.executor.free_slots == 0  # one child, four jobs: one runs, three wait in it
    assert harness.executor.cancel(queued[1].id)
    assert_failure(await asyncio.wait_for(futures[1], 3), "chancy.errors.JobCancelledError", final=True, cancelled=True)
    gate.touch()
    assert (await asyncio.wait_for(held, 10)).result_json == '"released"'
    for future in (futures[0], futures[2]):
        assert (await asyncio.wait_for(future, 10)).result_json == '"written"'
    assert [(tmp_path / f"w{i}").exists() for i in range(3)] == [True, False, True]
    await eventually(lambda: harness.executor.free_slots == 4, timeout=3)


@pytest.mark.parametrize("kind", ["process"])
async def test_process_batch_a_burst_of_submits_goes_to_the_child_in_one_message(make):
    """A worker submits the jobs of a claim one after another: they reach an idle child in
    one message (one wake-up of the child), not one message each."""
    harness = await make(depth=4)
    conn = harness.executor._children[0].conn
    sent: list[bytes] = []
    send = conn.send_bytes
    conn.send_bytes = lambda data: (sent.append(data), send(data))[1]  # type: ignore[method-assign]
    futures = [harness.submit(make_record(executor_tasks.add, i, 1)) for i in range(4)]
    assert [(await asyncio.wait_for(f, 10)).result_json for f in futures] == ["1", "2", "3", "4"]
    assert len(sent) == 1


@pytest.mark.parametrize("kind", ["process"])
async def test_process_batch_time_limit_counts_from_the_start_not_the_hand_over(make, tmp_path):
    harness = await make(depth=4)
    gate = tmp_path / "gate"
    held = harness.submit(make_record(executor_tasks.wait_for_file, str(gate)))
    quick = harness.submit(make_record(executor_tasks.add, 1, 2, limits=time_limit(0.5)))
    slow = harness.submit(make_record(executor_tasks.write_later, str(tmp_path / "slow"), 5, limits=time_limit(0.5)))
    await asyncio.sleep(1.0)  # queued twice as long as their limit: it has not started to count
    assert not quick.done() and not slow.done()
    gate.touch()
    assert (await asyncio.wait_for(held, 10)).succeeded
    assert (await asyncio.wait_for(quick, 10)).result_json == "3"
    began = time.monotonic()
    assert_failure(await asyncio.wait_for(slow, 10), "chancy.errors.JobTimeoutError")
    assert time.monotonic() - began < 3
    assert not (tmp_path / "slow").exists()


@pytest.mark.parametrize("kind", ["process"])
async def test_process_batch_jobs_queued_behind_a_crash_run_in_the_replacement(make, tmp_path):
    harness = await make(depth=4)
    crash = harness.submit(make_record(executor_tasks.exit_now, 3))
    behind = [harness.submit(make_record(executor_tasks.add, i, 1)) for i in range(3)]
    assert_failure(await asyncio.wait_for(crash, 10), "chancy.executors.process.ChildDiedError")
    assert [(await asyncio.wait_for(f, 10)).result_json for f in behind] == ["1", "2", "3"]


@pytest.mark.parametrize("kind", ["process"])
async def test_process_batch_withdraw_takes_back_the_unstarted_jobs(make, tmp_path):
    harness = await make(depth=4)
    held_path = tmp_path / "held"
    held = harness.submit(make_record(executor_tasks.write_later, str(held_path), 1.0))
    await eventually(started(held_path), timeout=10)
    queued = [make_record(executor_tasks.write_later, str(tmp_path / f"w{i}"), 0) for i in range(3)]
    for record in queued:
        harness.submit(record)
    withdrawn = harness.executor.withdraw()
    assert {r.id for r in withdrawn} == {r.id for r in queued}
    for record in queued:  # they get no outcome: the worker hands them back to their queue
        del harness.reports[record.id]
    assert harness.executor.free_slots == 3
    with pytest.raises(RuntimeError, match="is stopping"):
        harness.submit(make_record(executor_tasks.add, 1, 1))
    assert (await asyncio.wait_for(held, 10)).result_json == '"written"'
    await asyncio.sleep(0.3)
    assert not any((tmp_path / f"w{i}.started").exists() for i in range(3))
