"""Run jobs on the worker's own event loop: cheap, for I/O-bound coroutine tasks."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import TYPE_CHECKING

from chancy import execution
from chancy.errors import JobCancelledError, UnknownTaskError
from chancy.executors._slots import Slot, SlotExecutor

if TYPE_CHECKING:
    from chancy.queue import QueuePlugin


class AsyncExecutor(SlotExecutor):
    """Runs up to ``concurrency`` jobs as asyncio tasks with :func:`execution.run_async`.

    Time limit and cancel: a coroutine task's asyncio task is cancelled and the job is
    reported (timed out / cancelled) at once; its slot is freed when the task has unwound.
    A plain function runs in a thread (``run_async`` sends it there), and nothing can stop
    that thread: the job is still reported at the deadline (or on cancel), but its slot
    stays occupied until the thread returns, and what it returns is discarded. Use the
    thread or process executor for plain functions that need a time limit. (Those threads
    come from the loop's default executor, so with a concurrency above its size, plain
    functions queue there, and their time limit runs while they wait.)

    Memory limit: not supported (a warning once per task name).
    """

    supports_time_limit = True

    def __init__(self, queue: "QueuePlugin") -> None:
        super().__init__(queue)
        self._tasks: dict[uuid.UUID, asyncio.Task[execution.Outcome]] = {}

    def _run(self, slot: Slot) -> None:
        task = asyncio.get_running_loop().create_task(
            execution.run_async(slot.record), name=f"chancy-job-{slot.record.id}")
        self._tasks[slot.record.id] = task
        task.add_done_callback(lambda done: self._task_done(slot, done))
        self._arm_time_limit(slot)

    def _interrupt(self, slot: Slot, exc: BaseException) -> None:
        if not _runs_in_thread(slot.record.func):
            self._tasks[slot.record.id].cancel(str(exc))
        slot.report()

    def _task_done(self, slot: Slot, task: asyncio.Task[execution.Outcome]) -> None:
        del self._tasks[slot.record.id]
        if task.cancelled():  # by us (already reported) or by someone tearing the loop down
            error: BaseException | None = JobCancelledError("The job's task was cancelled")
        else:
            error = task.exception()  # set only if run_async itself failed (e.g. no thread)
        self._finished(slot, execution.Outcome.failure(slot.record.id, error) if error else task.result())


def _runs_in_thread(name: str) -> bool:
    """Whether ``run_async`` runs this task in a thread (it does for non-coroutine functions)."""
    try:
        return not inspect.iscoroutinefunction(execution.resolve(name))
    except UnknownTaskError:
        return False
