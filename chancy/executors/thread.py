"""Run jobs in a pool of threads: for blocking I/O-bound functions that release the GIL."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from chancy import execution
from chancy.executors._slots import Slot, SlotExecutor
from chancy.job import JobRecord

if TYPE_CHECKING:
    from chancy.queue import QueuePlugin

# Our own prototype, so that the shared ctypes.pythonapi object is left untouched and a
# NULL exception (``ctypes.py_object()``) can be passed to clear a pending one.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class ThreadExecutor(SlotExecutor):
    """Runs jobs with :func:`execution.run_sync` in ``concurrency`` threads, each with a
    copy of the submitter's context variables.

    Python cannot kill a thread. At a time limit, a cancel or a hard stop, this executor
    raises :class:`~chancy.errors.JobTimeoutError` (or :class:`~chancy.errors.JobCancelledError`)
    inside the job's thread with ``PyThreadState_SetAsyncExc``. What that can and cannot do:

    - Pure-Python code stops at its next bytecode, as if the current line had raised.
    - A blocking call in C (``time.sleep``, a socket or file read, a lock wait, a long
      call into a C extension) is *not* interrupted: the exception is raised when the
      call returns, so the job stops only then.
    - Code that catches the exception (``except BaseException``, a bare ``except``) or
      holds it off in ``finally`` keeps running.

    The outcome is reported once: when the thread ends, or ``grace`` seconds after the
    interruption, whichever comes first; its slot stays occupied until the thread has
    really ended. Threads still running after :meth:`stop` keep the interpreter from
    exiting until they return. Memory limits are not supported (a warning once per task).
    """

    supports_time_limit = True

    def __init__(self, queue: "QueuePlugin") -> None:
        super().__init__(queue)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"chancy-{queue.name}")
        self._threads: dict[Slot, _JobThread] = {}
        #: Jobs whose thread has ended, with their outcome, for the loop to report: threads
        #: hand them over in batches (one wake-up of the loop for all that finished
        #: meanwhile, not one per job).
        self._ended: collections.deque[tuple[Slot, execution.Outcome]] = collections.deque()
        self._report_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self, slot: Slot) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        thread = self._threads[slot] = _JobThread()
        self._pool.submit(self._serve, thread, contextvars.copy_context(), slot)
        self._arm_time_limit(slot)

    def _serve(self, thread: _JobThread, context: contextvars.Context, slot: Slot) -> None:
        """In the pool thread: run the job, then queue its outcome for the loop, waking
        the loop only if no report of ended jobs is due already. (The loop clears the
        flag before it takes the queue, so a job queued after it took them schedules
        another report.)"""
        try:
            outcome = thread.run(context, slot.record)
        except BaseException as exc:  # noqa: BLE001 - the injected exception landed on the way out
            outcome = execution.Outcome.failure(slot.record.id, exc)
        self._ended.append((slot, outcome))
        if not self._report_scheduled:
            self._report_scheduled = True
            assert self._loop is not None  # set by _run before any job is handed over
            _call_on(self._loop, self._report_ended)

    def _interrupt(self, slot: Slot, exc: BaseException) -> None:
        self._threads[slot].interrupt(type(exc))
        slot.timer = asyncio.get_running_loop().call_later(self.grace, slot.report)

    def _report_ended(self) -> None:
        self._report_scheduled = False
        ended = self._ended
        while ended:
            try:
                self._thread_done(*ended.popleft())
            except Exception as exc:  # noqa: BLE001 - as the loop does for a failing callback: the rest are reported
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "reporting a job of the thread executor failed", "exception": exc})

    def _thread_done(self, slot: Slot, outcome: execution.Outcome) -> None:
        del self._threads[slot]
        injected = slot.interrupted.error if slot.interrupted else None
        if injected and outcome.error and outcome.error["type"] == injected["type"]:
            # The injected exception ended the job: keep the traceback of where it was.
            injected["traceback"] = outcome.error["traceback"]
        self._finished(slot, outcome)

    async def _close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _JobThread:
    """The thread a job runs in: an exception is raised in it at most once, and never
    after the job has left it (pool threads are reused for the next job)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ident: int | None = None
        self._raised: type[BaseException] | None = None
        self._left = False

    def run(self, context: contextvars.Context, record: JobRecord) -> execution.Outcome:
        """In the pool thread. Only one exception is ever injected, so once it has landed
        (here or inside run_sync) nothing else can interrupt this function."""
        try:
            with self._lock:
                self._ident = threading.get_ident()
                raised = self._raised
            if raised is not None:  # interrupted before it started
                raise raised()
            return context.run(execution.run_sync, record)
        except BaseException as exc:  # noqa: BLE001 - the injected exception landed outside run_sync
            return execution.Outcome.failure(record.id, exc)
        finally:
            with self._lock:
                self._left = True
                if self._raised is not None and self._ident is not None:
                    _set_async_exc(self._ident, ctypes.py_object())  # drop it if it has not landed

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """From the event loop."""
        with self._lock:
            if self._raised is not None or self._left:
                return
            self._raised = exc_type
            if self._ident is not None:
                _set_async_exc(self._ident, exc_type)


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Run ``callback(*args)`` on ``loop`` from another thread, unless the loop is gone."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop was closed while a stuck thread was still running
        pass
