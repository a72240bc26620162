"""Helpers for testing code that uses Chancy: swap an app's queues for in-memory ones,
assert on what was pushed, run pushed jobs in the test process (:func:`drain`), run a
real worker for the duration of a block, and wait for conditions without fixed sleeps.

The pytest fixtures built on these live in :mod:`chancy.pytest_plugin`; everything here
works without pytest too."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

from chancy import execution, serialization
from chancy.app import Chancy
from chancy.job import JobRecord, JobState
from chancy.queue import QueuePlugin
from chancy.store.admin import JobSelection
from chancy.store.memory import MemoryQueue, separate_store
from chancy.store.of_app import keeps_jobs_in_memory, queries_of
from chancy.worker import Worker
from chancy.worker.outcomes import decide

#: The most jobs one :func:`drain` runs before it decides the jobs push each other forever.
MAX_DRAINED_JOBS = 10_000
#: How many job rows :func:`pushed_jobs` reads from Postgres at most.
MAX_LISTED_JOBS = 10_000


# --- which app --------------------------------------------------------------------------------
def app_of(target: Any) -> Chancy:
    """The :class:`Chancy` behind an app, a native task or a ``chancy.compat`` task/app."""
    for candidate in (target, getattr(target, "app", None)):
        if isinstance(candidate, Chancy):
            return candidate
        inner = getattr(candidate, "chancy", None)
        if isinstance(inner, Chancy):
            return inner
    raise TypeError(f"{target!r} is not a Chancy app, a task of one, or a chancy.compat app or task: "
                    "pass app=… to say which app to look in")


def _task_name(task: Any) -> str:
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{task!r} is not a task or a task name")
    return name


# --- in-memory queues ---------------------------------------------------------------------------
@contextlib.contextmanager
def in_memory(app: Any) -> Iterator[Chancy]:
    """Within the block, every queue of ``app`` (declared or not) keeps its jobs in this
    process (:class:`~chancy.store.memory.MemoryQueue`, same settings): nothing touches
    Postgres, as with procrastinate's in-memory connector. The app's own queues come
    back on exit, and the in-memory jobs are gone."""
    core = app_of(app)
    if "queue" in vars(core):
        raise RuntimeError(f"{core!r} is already in memory: in_memory() blocks do not nest")
    saved = core.queues
    memory: dict[str, QueuePlugin] = {}

    def queue(name: str) -> QueuePlugin:
        """Any queue name, declared or not, is one more in-memory queue."""
        if name not in memory:
            declared = saved.get(name)
            replacement = MemoryQueue(name) if declared is None else MemoryQueue(
                name, concurrency=declared.concurrency, executor=declared.executor_factory,
                polling_interval=declared.polling_interval)
            replacement.bind(core)
            memory[name] = replacement
        return memory[name]

    with separate_store(core):
        for name in saved:
            queue(name)
        core.queues = memory
        core.queue = queue  # type: ignore[method-assign]  # this instance only, undone below
        try:
            yield core
        finally:
            del core.queue
            core.queues = saved


def is_in_memory(app: Any) -> bool:
    """Whether the app keeps its jobs in this process (inside :func:`in_memory`, or built
    with in-memory queues only)."""
    return keeps_jobs_in_memory(app_of(app))


# --- what was pushed ------------------------------------------------------------------------------
def pushed_jobs(app: Any, task: Any = None, *, queue: str | None = None,
                states: Sequence[JobState | str] | None = None) -> list[JobRecord]:
    """The jobs ``app`` holds (of ``task``, on ``queue``, in ``states``), oldest first (by
    id: ids grow with time), at most :data:`MAX_LISTED_JOBS`: from its in-memory queues
    inside :func:`in_memory`, else from its Postgres table."""
    core = app_of(app)
    name = None if task is None else _task_name(task)
    wanted = tuple(sorted({JobState(s) for s in states})) if states is not None else ()
    if states is not None and not wanted:
        return []
    selection = JobSelection(task=name, queues=(queue,) if queue else (), states=wanted)
    return list(reversed(queries_of(core).list_jobs_sync(selection, MAX_LISTED_JOBS)))


def _as_stored(value: Any) -> Any:
    """``value`` as it reads back from a job row (tuples become lists, and so on)."""
    return serialization.loads(serialization.dumps(value))


def _matches(record: JobRecord, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> bool:
    return ((args is None or list(record.args) == _as_stored(list(args)))
            and (kwargs is None or record.kwargs == _as_stored(dict(kwargs))))


def _describe(record: JobRecord) -> str:
    return (f"{record.func}(args={list(record.args)!r}, kwargs={record.kwargs!r}) on queue {record.queue!r}, "
            f"{record.state.value}")


def _wanted(name: str, args: Any, kwargs: Any, queue: str | None) -> str:
    parts = [f"args={list(args)!r}" if args is not None else "",
             f"kwargs={dict(kwargs)!r}" if kwargs is not None else "",
             f"queue={queue!r}" if queue is not None else ""]
    return f"{name}(" + ", ".join(p for p in parts if p) + ")"


def assert_pushed(task: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, *,
                  queue: str | None = None, count: int | None = None, app: Any = None) -> list[JobRecord]:
    """Assert that ``task`` was pushed with these arguments (those not given match any),
    ``count`` times if given, else at least once; returns the matching jobs. The failure
    message lists what was pushed instead."""
    __tracebackhide__ = True  # pytest shows the test's line, not this one
    core = app_of(app if app is not None else task)
    name = _task_name(task)
    of_task = pushed_jobs(core, name)
    found = [r for r in of_task if _matches(r, args, kwargs) and (queue is None or r.queue == queue)]
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    expected = f"{count} job(s)" if count is not None else "a job"
    lines = [f"Expected {expected} {_wanted(name, args, kwargs, queue)} to be pushed, found {len(found)}."]
    if of_task:
        lines.append(f"Jobs of {name} that were pushed ({len(of_task)}):")
        lines += [f"  - {_describe(r)}" for r in of_task[:20]]
    else:
        others = sorted({r.func for r in pushed_jobs(core)})
        lines.append(f"No job of {name} was pushed" + (f"; jobs of other tasks were: {', '.join(others)}"
                                                       if others else "; no job was pushed at all") + ".")
    raise AssertionError("\n".join(lines))


def refute_pushed(task: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, *,
                  queue: str | None = None, app: Any = None) -> None:
    """Assert that no job of ``task`` with these arguments (those not given match any) was pushed."""
    __tracebackhide__ = True  # pytest shows the test's line, not this one
    core = app_of(app if app is not None else task)
    name = _task_name(task)
    found = [r for r in pushed_jobs(core, name) if _matches(r, args, kwargs) and (queue is None or r.queue == queue)]
    if found:
        lines = [f"Expected no job {_wanted(name, args, kwargs, queue)} to be pushed, found {len(found)}:"]
        lines += [f"  - {_describe(r)}" for r in found[:20]]
        raise AssertionError("\n".join(lines))


# --- running pushed jobs here ------------------------------------------------------------------------
@dataclasses.dataclass
class DrainResult:
    """What :func:`drain` ran: every attempt's job, by final outcome."""

    succeeded: list[JobRecord] = dataclasses.field(default_factory=list)
    failed: list[JobRecord] = dataclasses.field(default_factory=list)
    cancelled: list[JobRecord] = dataclasses.field(default_factory=list)
    #: How many attempts failed and were retried (at once: a drain does not wait out backoff).
    retries: int = 0

    @property
    def ran(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.cancelled)

    def __repr__(self) -> str:
        return (f"<DrainResult {len(self.succeeded)} succeeded, {len(self.failed)} failed, "
                f"{len(self.cancelled)} cancelled>")

    def __str__(self) -> str:
        text = (f"ran {self.ran} job(s): {len(self.succeeded)} succeeded, {len(self.failed)} failed, "
                f"{len(self.cancelled)} cancelled, {self.retries} retried attempt(s)")
        return "\n".join([text, *(_failure(r) for r in self.failed)])

    def assert_succeeded(self) -> None:
        """Fail with every failed job's last error and traceback, if any job failed."""
        __tracebackhide__ = True
        if self.failed or self.cancelled:
            raise AssertionError(str(self))


def _failure(record: JobRecord) -> str:
    error = record.errors[-1] if record.errors else {}
    trace = (error.get("traceback") or "").rstrip()
    return (f"--- {record.func} (job {record.id}) failed after {record.attempts} attempt(s): "
            f"{error.get('type', '?')}: {error.get('message', '')}" + (f"\n{trace}" if trace else ""))


async def drain_async(app: Any, *, queues: Sequence[str] | None = None, max_jobs: int = MAX_DRAINED_JOBS,
                      retry_at_once: bool = True) -> DrainResult:
    """Run every job that is due on the app's queues (or ``queues``) here, one at a time,
    including the jobs those jobs push, until none is left; a failed attempt with attempts
    left runs again at once (``retry_at_once=False``: after its backoff, which ends the
    drain if it is in the future). Jobs scheduled for later stay where they are. Rate
    limits are not applied. Returns what ran; raises if more than ``max_jobs`` ran."""
    core = app_of(app)
    names = list(queues) if queues is not None else list(core.queues)
    unknown = [n for n in names if n not in core.queues]
    if unknown:
        raise ValueError(f"drain: no queue {unknown} in the app; its queues are {sorted(core.queues)}")
    worker_id = f"chancy-testing-drain:{uuid.uuid4().hex[:8]}"
    result = DrainResult()
    attempts = 0
    while True:
        progressed = False
        for name in list(core.queues) if queues is None else names:  # jobs may open new in-memory queues
            queue = core.queues[name]
            for record in await queue.claim(worker_id, 1):
                attempts += 1
                if attempts > max_jobs:
                    raise AssertionError(f"drain ran {max_jobs} attempts and jobs keep coming: do jobs push "
                                         "each other forever? (raise max_jobs if this is expected)")
                transition = decide(record, await execution.run_async(record))
                if transition.state is JobState.RETRYING:
                    result.retries += 1
                    if retry_at_once:
                        transition = dataclasses.replace(transition, delay=0)
                await queue.write_back(worker_id, [core.hooks.with_follow_ups(record, transition)])
                final = await queue.get(record.id)
                finished = {JobState.SUCCEEDED: result.succeeded, JobState.FAILED: result.failed,
                            JobState.CANCELLED: result.cancelled}
                if final is not None and final.state in finished:
                    finished[final.state].append(final)
                progressed = True
        if not progressed:
            return result


def drain(app: Any, **options: Any) -> DrainResult:
    """:func:`drain_async` for synchronous tests (in an async test, ``await drain_async``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain() was called inside a running event loop: use `await drain_async(app)`")
    core = app_of(app)

    async def run() -> DrainResult:
        try:
            return await drain_async(core, **options)
        finally:
            await core.close()  # its async pool belongs to this loop, which ends here

    return asyncio.run(run())


# --- a real worker ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def running_worker(app: Chancy, **options: Any) -> AsyncIterator[Worker]:
    """Start a worker for ``app`` in this event loop; drain and stop it on exit."""
    options.setdefault("install_signal_handlers", False)
    options.setdefault("shutdown_timeout", 10.0)
    worker = Worker(app_of(app), **options)
    task = asyncio.create_task(worker.start())
    ready = asyncio.create_task(worker.wait_until_ready())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises the start-up error
    try:
        yield worker
    finally:
        worker.request_stop()
        await task


@contextlib.contextmanager
def worker_thread(app: Any, startup_timeout: float = 60.0, **options: Any) -> Iterator[Worker]:
    """:func:`running_worker` for synchronous code: the worker runs in a thread with its
    own event loop (and closes the app's async pools there when it stops). In async
    code, use ``async with running_worker(app)`` instead: the app's async pools can only
    serve one event loop."""
    core = app_of(app)
    started = threading.Event()
    stop: list[Callable[[], object]] = []
    box: dict[str, Any] = {}

    async def serve() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            async with running_worker(core, **options) as worker:
                box["worker"] = worker
                stop.append(lambda: loop.call_soon_threadsafe(done.set))
                started.set()
                await done.wait()
        finally:
            await core.close()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=main, name="chancy-test-worker", daemon=True)
    thread.start()
    if not started.wait(startup_timeout) or "error" in box:
        raise RuntimeError("the test worker did not start") from box.get("error")
    try:
        yield box["worker"]
    finally:
        if thread.is_alive():  # else the worker already stopped (its error is raised below)
            stop[0]()
        thread.join()
        if "error" in box:
            raise box["error"]


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)
