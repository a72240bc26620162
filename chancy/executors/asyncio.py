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
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}

    def _run(self, slot: Slot) -> None:
        # Unnamed: naming it after its job (str of a UUID) cost a third of create_task, for
        # every job; ``_tasks`` maps each job to its task.
        self._tasks[slot.record.id] = asyncio.get_running_loop().create_task(self._job(slot))
        self._arm_time_limit(slot)

    async def _job(self, slot: Slot) -> None:
        """Run the job and report it from its own task: a done callback per job would
        cost one more trip through the event loop, for every job."""
        try:
            outcome = await execution.run_async(slot.record)
        except asyncio.CancelledError:  # by us (already reported) or by someone tearing the loop down
            outcome = execution.Outcome.failure(slot.record.id, JobCancelledError("The job's task was cancelled"))
        except Exception as exc:  # noqa: BLE001 - run_async itself failed (e.g. no thread)
            outcome = execution.Outcome.failure(slot.record.id, exc)
        self._end(slot, outcome)

    def _interrupt(self, slot: Slot, exc: BaseException) -> None:
        if not _runs_in_thread(slot.record.func):
            task = self._tasks[slot.record.id]
            task.cancel(str(exc))
            # A task cancelled before its first step never runs _job: end its slot here.
            task.add_done_callback(lambda _: self._end(slot, None))
        slot.report()

    def _end(self, slot: Slot, outcome: execution.Outcome | None) -> None:
        if self._slots.get(slot.record.id) is slot:  # not ended yet
            del self._tasks[slot.record.id]
            self._finished(slot, outcome)


def _runs_in_thread(name: str) -> bool:
    """Whether ``run_async`` runs this task in a thread (it does for non-coroutine functions)."""
    try:
        return not inspect.iscoroutinefunction(execution.resolve(name))
    except UnknownTaskError:
        return False
