"""Bookkeeping shared by the three executors: a slot per submitted job, its deadline,
cancel, a graceful-then-hard stop, and reporting each job's outcome exactly once.

A subclass only says how a job starts (:meth:`SlotExecutor._run`), how a running job is
interrupted (:meth:`SlotExecutor._interrupt`) and calls :meth:`SlotExecutor._finished`
when the job's thread, task or process has really ended.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from chancy.errors import JobCancelledError, JobTimeoutError
from chancy.execution import Outcome
from chancy.executors.base import Executor, OutcomeCallback
from chancy.job import JobRecord, Limit

if TYPE_CHECKING:
    from chancy.queue import QueuePlugin

log = logging.getLogger("chancy.executors")


class Slot:
    """One submitted job, from :meth:`~SlotExecutor.submit` until its work has ended.

    The outcome can be reported before the slot is freed: a job stopped by a limit or a
    cancel may be reported while its thread has not ended yet, and the slot stays
    occupied until it has.
    """

    def __init__(self, record: JobRecord, on_outcome: OutcomeCallback) -> None:
        self.record = record
        self._on_outcome = on_outcome
        self.reported = False
        #: A future to await the report on, made only when someone waits (a stop): one
        #: per job cost a measurable share of the asyncio executor's time per job.
        self._waiter: asyncio.Future[None] | None = None
        #: Set when the job is being stopped (time or memory limit, cancel, hard stop).
        self.interrupted: Outcome | None = None
        #: The time-limit timer, then (in some executors) the grace timer after an interrupt.
        self.timer: asyncio.TimerHandle | None = None

    def report(self, outcome: Outcome | None = None) -> None:
        """Deliver the outcome unless one was delivered already. Once a job has been
        interrupted, the interruption is its outcome, even if the job finished meanwhile
        (so ``report()`` without an argument reports the interruption)."""
        final = self.interrupted or outcome
        if self.reported or final is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.reported = True
        if self._waiter is not None:
            self._waiter.set_result(None)
        self._on_outcome(final)

    def waiter(self) -> asyncio.Future[None]:
        """A future done once the outcome is reported."""
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
            if self.reported:
                self._waiter.set_result(None)
        return self._waiter


class SlotExecutor(Executor):
    """An executor with ``concurrency`` slots; see the module docstring."""

    #: Seconds an interrupted job gets to end before the executor gives up waiting
    #: (thread: reports anyway; process: SIGKILL after SIGTERM).
    grace: float = 1.0

    def __init__(self, queue: "QueuePlugin") -> None:
        super().__init__(queue)
        self._slots: dict[uuid.UUID, Slot] = {}
        self._stopping = False
        self._warned: set[str] = set()  # task names warned about an unsupported memory limit

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self._slots)

    @property
    def running(self) -> set[uuid.UUID]:
        return {job_id for job_id, slot in self._slots.items() if not slot.reported}

    def submit(self, record: JobRecord, on_outcome: OutcomeCallback) -> None:
        if self._stopping:
            raise RuntimeError(f"{type(self).__name__} is stopping and takes no more jobs")
        if self.free_slots <= 0:
            raise RuntimeError(f"{type(self).__name__} has no free slot (capacity {self.capacity})")
        if record.id in self._slots:
            raise RuntimeError(f"job {record.id} is already running here")
        self._warn_unsupported(record)
        slot = Slot(record, on_outcome)
        self._slots[record.id] = slot
        self._run(slot)

    def cancel(self, job_id: uuid.UUID) -> bool:
        slot = self._slots.get(job_id)
        if slot is None or slot.reported:
            return False
        self._stop_job(slot, JobCancelledError("The job was cancelled while it was running"),
                       final=True, cancelled=True)
        return True

    async def stop(self, timeout: float | None = None) -> None:
        """Safe to call again while a previous call waits (the worker's second Ctrl-C)."""
        self._stopping = True
        await self._wait_reported(timeout)
        for slot in list(self._slots.values()):
            if not slot.reported:
                # Not final: the attempt counts, and the job runs again if it has attempts left.
                self._stop_job(slot, JobCancelledError("The worker stopped before the job finished"))
        await self._wait_reported(None)
        await self._close()

    # --- for subclasses --------------------------------------------------------------------
    @abc.abstractmethod
    def _run(self, slot: Slot) -> None:
        """Start the job; call :meth:`_arm_time_limit` once it really runs."""

    @abc.abstractmethod
    def _interrupt(self, slot: Slot, exc: BaseException) -> None:
        """Stop the job (``slot.interrupted`` is already set) and make sure
        ``slot.report`` is called within a bounded time."""

    async def _close(self) -> None:
        """Release threads or processes after the last outcome was reported."""

    def _arm_time_limit(self, slot: Slot) -> None:
        seconds = slot.record.limit(Limit.Type.TIME)
        if seconds is not None:
            slot.timer = asyncio.get_running_loop().call_later(seconds, self._time_out, slot, seconds)

    def _finished(self, slot: Slot, outcome: Outcome | None) -> None:
        """The job's work has ended: report (if not done yet; None: its interruption) and
        free its slot."""
        slot.report(outcome)
        self._slots.pop(slot.record.id, None)

    def _forget(self, slot: Slot) -> None:
        """Drop a withdrawn job that never started: no outcome, its slot freed."""
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self._slots.pop(slot.record.id, None)

    def _stop_job(self, slot: Slot, exc: BaseException, *, final: bool = False, cancelled: bool = False) -> None:
        if slot.interrupted is not None or slot.reported:
            return
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        slot.interrupted = Outcome.failure(slot.record.id, exc, final=final, cancelled=cancelled)
        self._interrupt(slot, exc)

    # --- internals -------------------------------------------------------------------------
    def _time_out(self, slot: Slot, seconds: float) -> None:
        slot.timer = None
        self._stop_job(slot, JobTimeoutError(f"The job exceeded its time limit of {seconds:g}s"))

    async def _wait_reported(self, timeout: float | None) -> None:
        waiting = [slot.waiter() for slot in self._slots.values() if not slot.reported]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)

    def _warn_unsupported(self, record: JobRecord) -> None:
        """Every executor here enforces time limits; only the process one, memory limits."""
        if self.supports_memory_limit or record.limit(Limit.Type.MEMORY) is None or record.func in self._warned:
            return
        self._warned.add(record.func)
        log.warning("%s cannot enforce the memory limit of task %r; it is ignored "
                    "(the process executor enforces it)", type(self).__name__, record.func)
