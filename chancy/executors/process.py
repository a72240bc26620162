"""Run jobs in long-lived child processes, one job per child at a time (the next few
queued in it), so that a job can be killed for its time or memory limit, or on cancel,
without harming the worker."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import dataclasses
import importlib
import logging
import multiprocessing
import operator
import os
import pickle
import select
import signal
import sys
import traceback
import uuid
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Callable, Mapping

import psutil

from chancy import execution, stdio
from chancy.errors import ChancyError, JobMemoryError
from chancy.executors._slots import Slot, SlotExecutor
from chancy.job import JobRecord, Limit

if TYPE_CHECKING:
    from chancy.queue import QueuePlugin

log = logging.getLogger(__name__)

#: Seconds between two samples of a busy child's resident memory.
MEMORY_SAMPLE_INTERVAL = 0.1
#: Seconds :meth:`ProcessExecutor.stop` gives idle children to exit before killing them.
EXIT_TIMEOUT = 5.0
#: Jobs a child holds at once (one running, the others next): handed over in one message.
DEFAULT_DEPTH = 4
_PR_SET_PDEATHSIG = 1

#: Modules the worker imported to load its app (``chancy worker -A``): every child imports
#: them first, so that the app's module-level setup (signal receivers, Django's setup…)
#: runs there too.
app_modules: list[str] = []
#: Called in each child once it has imported :data:`app_modules`, before the modules of
#: its tasks (the Celery layer sets Django up here: task modules import models).
app_loaded_hooks: list[Callable[[], None]] = []
#: Called in each child once it has loaded the app, before it takes a job (the Celery
#: layer sends ``worker_process_init`` from here).
child_init_hooks: list[Callable[[], None]] = []


class ChildDiedError(ChancyError):
    """The child process running a job died before it reported an outcome."""


@dataclasses.dataclass(frozen=True)
class ChildLimits:
    """When a child is replaced, in Celery's terms and units (``worker_max_tasks_per_child``,
    ``worker_max_memory_per_child`` in KiB): after ``max_tasks`` jobs, or after a job that
    leaves it above ``max_memory_kib`` resident. Bounds leaks in long-lived children."""

    max_tasks: int | None = None
    max_memory_kib: int | None = None

    def __bool__(self) -> bool:
        return self.max_tasks is not None or self.max_memory_kib is not None

    def or_else(self, other: "ChildLimits") -> "ChildLimits":
        """These limits, each unset one taken from ``other``."""
        return ChildLimits(self.max_tasks if self.max_tasks is not None else other.max_tasks,
                           self.max_memory_kib if self.max_memory_kib is not None else other.max_memory_kib)

    def executor(self, queue: "QueuePlugin") -> "ProcessExecutor":
        """An executor factory for ``Queue(executor=limits.executor)``."""
        return ProcessExecutor(queue, maximum_jobs_per_worker=self.max_tasks,
                               maximum_memory_per_worker=self.max_memory_kib * 1024 if self.max_memory_kib else None)


#: No per-child limit: children live as long as their worker (the default of the options that take limits).
NO_CHILD_LIMITS = ChildLimits()


@dataclasses.dataclass(frozen=True)
class ChildSetup:
    """What a child loads before it says it is ready, so that it runs exactly the tasks
    its worker runs: the worker's :data:`app_modules`, then the modules of its tasks (see
    :func:`task_modules`), and the allowed import prefixes (see :func:`execution.allow_imports`).
    ``output`` is the worker's logging and print() redirection (see :mod:`chancy.stdio`):
    a task's output is logged as the worker's would be, when it is written."""

    app_modules: tuple[str, ...]
    task_modules: tuple[str, ...]
    allowed_imports: tuple[str, ...]
    output: stdio.WorkerOutput | None = None
    #: The worker's environment when it starts the child: a fork server forks children
    #: from the environment it had when it started, which may be older.
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of_this_process(cls) -> "ChildSetup":
        apps = tuple(name for name in dict.fromkeys(app_modules) if name not in _MAIN_MODULES)
        return cls(apps, task_modules(exclude=apps), execution.allowed_imports(), stdio.current(), dict(os.environ))


#: ``__main__`` is never imported by name: spawn runs the worker's main script in the child by itself.
_MAIN_MODULES = ("__main__", "__mp_main__")


def task_modules(exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The module defining each registered task, sorted (importing it registers the task
    again, under a custom name too)."""
    defining = set(filter(None, (_defining_module(func) for func in execution.registry.values())))
    return tuple(sorted(defining - set(exclude) - set(_MAIN_MODULES)))


def _defining_module(func: Callable[..., Any]) -> str | None:
    """The module of a task function, or of the task object whose bound method was
    registered (a Celery task registers its ``run_from_worker``)."""
    return getattr(getattr(func, "__self__", func), "__module__", None)


class ProcessExecutor(SlotExecutor):
    """Runs each job with :func:`execution.run_sync` in one of ``concurrency`` child processes.

    - Batches: each child holds up to ``depth`` jobs, handed over in one message, and runs
      them one after another, reporting each outcome as it finishes (a child never waits
      for the worker between two jobs). A job counts as running from the moment it is
      handed over; it *runs* (its limits count) once the child reported the job before it.
    - Time limit and cancel: the child running the job gets SIGTERM, then SIGKILL
      ``grace`` seconds later; the job is reported once the child is dead, and a fresh child
      takes its place and the jobs queued behind. A queued job that is cancelled or stopped
      is skipped by its child and reported at once.
    - Memory limit: the child's resident set size is sampled every
      ``MEMORY_SAMPLE_INTERVAL`` seconds while it runs a job with a memory limit; over the
      limit, it is killed the same way and the job fails with JobMemoryError giving the
      size measured. An allocation made and freed between two samples goes unseen.
    - A child that dies by itself (a crash, ``os._exit``, the kernel's OOM killer) fails
      the job it was running with ChildDiedError naming its exit code or signal, and is
      replaced; the jobs queued behind it go to the other children.
    - After ``maximum_jobs_per_worker`` jobs, or after a job that leaves it holding more
      than ``maximum_memory_per_worker`` bytes, a child exits and is replaced (bounding leaks).

    Children start from a fork server (``mp_context="forkserver"``) that has imported
    Chancy once: a replacement is a fork, not a fresh interpreter; it imports the app.
    They ignore SIGINT (the worker handles Ctrl-C and drains) and, on Linux, are killed
    when the thread that started them (the worker's event-loop thread) ends.
    Each child loads the worker's app before it takes a job (see :class:`ChildSetup`),
    then runs :data:`child_init_hooks`: it resolves the same task names as the worker,
    custom names included, with the same allowed imports. A child that fails to load
    sends its traceback: :meth:`start` raises with it; later, it is logged.
    """

    supports_time_limit = True
    supports_memory_limit = True
    isolates_jobs = True

    def __init__(
        self,
        queue: "QueuePlugin",
        maximum_jobs_per_worker: int | None = None,
        mp_context: str = "forkserver",
        maximum_memory_per_worker: int | None = None,
        depth: int = DEFAULT_DEPTH,
    ) -> None:
        super().__init__(queue)
        if maximum_jobs_per_worker is not None and maximum_jobs_per_worker < 1:
            raise ValueError(f"maximum_jobs_per_worker must be None or >= 1, got {maximum_jobs_per_worker!r}")
        if maximum_memory_per_worker is not None and maximum_memory_per_worker < 1:
            raise ValueError(f"maximum_memory_per_worker must be None or >= 1 bytes, got {maximum_memory_per_worker!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        self.maximum_jobs_per_worker = maximum_jobs_per_worker
        self.maximum_memory_per_worker = maximum_memory_per_worker
        # A child over its memory bound is replaced after its current job: jobs queued
        # behind would run in it meanwhile, so it is given one job at a time.
        self.depth = 1 if maximum_memory_per_worker else depth
        self._context = multiprocessing.get_context(mp_context)
        #: The children in service: ``concurrency`` of them until stop.
        self._children: list[_Child] = []
        #: Every child whose pipe is open or that is not reaped yet, in service or not.
        self._living: set[_Child] = set()
        self._burials: set[asyncio.Task[None]] = set()
        self._load_failure: str | None = None  # the last child's failure to load the app
        #: Jobs submitted and not handed to a child yet, oldest first.
        self._waiting: collections.deque[Slot] = collections.deque()
        self._dispatch_scheduled = False  # a dispatch is due at the next turn of the loop

    async def start(self) -> None:
        """Start every child at once and wait until each is ready."""
        setup = ChildSetup.of_this_process()
        if self._context.get_start_method() == "forkserver":
            # Chancy and what it imports, once; not the app, whose import-time code must run
            # in each child, as a child (it may set itself up differently there).
            self._context.set_forkserver_preload([__name__])
        self._children = [self._spawn(setup) for _ in range(self.concurrency)]
        if not all(await asyncio.gather(*(child.started for child in self._children))):
            await self.stop(0)
            reason = self._load_failure or "it died; its error output says why"
            raise RuntimeError(f"A child process of the process executor could not start: {reason}")

    def _run(self, slot: Slot) -> None:
        """Queue the job; it is handed over once the jobs submitted in the same turn of
        the loop have joined it (a worker submits them in bursts), so that a burst goes
        out in one message per child, not one per job (a message wakes a child, and each
        wake-up cost more of the worker's CPU than the job itself)."""
        self._waiting.append(slot)
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Hand waiting jobs to ready children, each child's share in one message: to an
        idle child at once, to a busy one once half its queue has room (one message per
        few jobs, not one per job)."""
        self._dispatch_scheduled = False
        for child in self._children:
            if not self._waiting:
                return
            room = self._room(child)
            if room <= 0 or (child.queue and room < (self.depth + 1) // 2):
                continue
            batch = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            self._send(child, batch)

    def _room(self, child: _Child) -> int:
        if not child.started.done() or not child.started.result() or child.retiring:
            return 0
        room = self.depth - len(child.queue)
        if self.maximum_jobs_per_worker:
            room = min(room, self.maximum_jobs_per_worker - child.jobs_sent)
        return room

    def _send(self, child: _Child, slots: list[Slot]) -> None:
        jobs = []
        for slot in slots:
            child.seq += 1
            child.queue.append((child.seq, slot))
            jobs.append((child.seq, slot.record))
        child.jobs_sent += len(slots)
        try:
            child.conn.send_bytes(pickle.dumps((_JOBS, jobs), pickle.HIGHEST_PROTOCOL))
        except OSError:  # it died meanwhile; its closed pipe tells us, and the jobs move on
            return
        if not child.running:  # it was idle: the first one runs now
            self._began(child)

    def _began(self, child: _Child) -> None:
        """The job at the head of ``child``'s queue runs now: its limits start to count."""
        child.running = True
        slot = child.queue[0][1]
        if self.on_start is not None:
            self.on_start(slot.record.id)
        self._arm_time_limit(slot)
        limit = slot.record.limit(Limit.Type.MEMORY)
        if limit is not None:
            child.timer = asyncio.get_running_loop().call_later(MEMORY_SAMPLE_INTERVAL, self._sample, child, limit)

    def withdraw(self) -> list[JobRecord]:
        """The jobs not handed over yet, and those queued in children that have not
        started; each child is told atomically to start none after the one it runs. The
        executor then takes no more jobs (the worker is stopping it)."""
        self._stopping = True
        slots = list(self._waiting)
        self._waiting.clear()
        for child in self._living:
            with child.gate.get_lock():
                gate = child.gate.get_obj()
                started = gate[_LIMIT] = gate[_STARTED]
            slots += [slot for seq, slot in child.queue if seq > started]
            child.queue = collections.deque((seq, slot) for seq, slot in child.queue if seq <= started)
        for slot in slots:
            self._forget(slot)
        return [slot.record for slot in slots]

    def _interrupt(self, slot: Slot, exc: BaseException) -> None:
        waiting = next((i for i, queued in enumerate(self._waiting) if queued is slot), None)
        if waiting is not None:  # not handed over yet
            del self._waiting[waiting]
            self._finished(slot, None)
            return
        child = next(child for child in self._living if any(queued is slot for _, queued in child.queue))
        seq = next(seq for seq, queued in child.queue if queued is slot)
        if child.queue[0][1] is not slot:  # queued behind another job: its child skips it
            child.queue.remove((seq, slot))
            try:
                child.conn.send_bytes(pickle.dumps((_SKIP, seq), pickle.HIGHEST_PROTOCOL))
            except OSError:
                pass
            self._finished(slot, None)
            return
        if child in self._children:
            self._replace(child)
        _stop_timer(child)
        child.process.terminate()
        asyncio.get_running_loop().call_later(self.grace, _kill_if_alive, child.process)

    async def _close(self) -> None:
        for child in list(self._children):
            self._retire(child)
        if not self._living:
            return
        await asyncio.wait([child.gone for child in self._living], timeout=EXIT_TIMEOUT)
        for child in self._living:
            child.process.kill()
        await asyncio.gather(*(child.gone for child in self._living))

    # --- children ----------------------------------------------------------------------------
    def _spawn(self, setup: ChildSetup | None = None) -> _Child:
        loop = asyncio.get_running_loop()
        ours, theirs = self._context.Pipe()
        gate = self._context.Array("q", [0, _NO_LIMIT])
        # typeshed types get_context(<a str>) as BaseContext, which declares no Process;
        # each context it returns (fork, spawn, forkserver) has one.
        process = self._context.Process(target=_child_main,  # type: ignore[attr-defined]
                                        args=(theirs, gate, os.getpid(), setup or ChildSetup.of_this_process()),
                                        name=f"chancy-{self.queue.name}", daemon=True)
        process.start()
        theirs.close()  # so that the child's death closes the pipe
        child = _Child(process, ours, gate, loop.create_future(), loop.create_future(), _poller(ours))
        self._living.add(child)
        loop.add_reader(ours.fileno(), self._on_readable, child)
        return child

    def _replace(self, child: _Child) -> None:
        """Take ``child`` out of service; a fresh one takes its place unless stopping."""
        self._children.remove(child)
        if not self._stopping:
            self._children.append(self._spawn())

    def _retire(self, child: _Child) -> None:
        """Let a child exit cleanly once its current job is done (it runs no queued one)."""
        self._replace(child)
        child.retiring = True
        try:
            child.conn.send_bytes(pickle.dumps(None))
        except OSError:  # it is gone already; its closed pipe tells us
            pass

    def _on_readable(self, child: _Child) -> None:
        """Read every message the child has sent (outcomes arrive in bursts)."""
        conn = child.conn
        try:
            while True:
                self._on_message(child, pickle.loads(conn.recv_bytes()))
                if conn.closed or not child.readable.poll(0):
                    break
        except (EOFError, OSError):
            self._on_exit(child)
        self._dispatch()

    def _on_message(self, child: _Child, message: Any) -> None:
        if message is None:  # ready
            child.started.set_result(True)
        elif message == _RETIRED:  # it exits without running its queued jobs
            child.clean_exit = True
        elif isinstance(message, _LoadFailure):  # it exits next
            self._load_failure = message.traceback
            log.error("a child process of queue %r could not load the app: %s", self.queue.name, message.traceback)
            child.started.set_result(False)
        else:  # an outcome, (seq, *its fields but the job id) (a job being killed reports its interruption)
            seq = message[0]
            while child.queue and child.queue[0][0] != seq:  # skipped ones left already
                child.queue.popleft()
            if not child.queue:
                return
            _, slot = child.queue.popleft()
            _stop_timer(child)
            child.running = False
            child.jobs_done += 1
            in_service = child in self._children
            if in_service and self._spent(child):
                self._retire(child)  # before reporting, so that no new job is given to it
            self._finished(slot, execution.Outcome(slot.record.id, *message[1:]))
            if child.queue and in_service and not child.retiring:
                self._began(child)

    def _spent(self, child: _Child) -> bool:
        """Whether a child that just finished a job is due for replacement: it ran
        ``maximum_jobs_per_worker`` jobs, or holds more than ``maximum_memory_per_worker``
        bytes of resident memory (Celery's max_tasks_per_child / max_memory_per_child)."""
        if self.maximum_jobs_per_worker and child.jobs_done >= self.maximum_jobs_per_worker:
            return True
        if self.maximum_memory_per_worker:
            try:
                return psutil.Process(child.process.pid).memory_info().rss > self.maximum_memory_per_worker
            except psutil.Error:  # it is exiting; its closed pipe tells us
                return False
        return False

    def _on_exit(self, child: _Child) -> None:
        asyncio.get_running_loop().remove_reader(child.conn.fileno())
        unexpected = child in self._children  # not retired or killed by us
        if unexpected:
            self._replace(child)
        burial = asyncio.get_running_loop().create_task(self._bury(child, unexpected))
        self._burials.add(burial)
        burial.add_done_callback(self._burials.discard)

    async def _bury(self, child: _Child, unexpected: bool) -> None:
        """Reap a child whose pipe closed, report the job it was running, if any, and
        hand the jobs queued behind it (never started) to the other children."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        while child.process.exitcode is None:  # it is exiting; SIGKILL if it lingers
            if loop.time() > deadline:
                child.process.kill()
            await asyncio.sleep(0.01)
        child.conn.close()
        _stop_timer(child)
        self._living.discard(child)
        if not child.started.done():
            child.started.set_result(False)
        if unexpected:
            log.warning("a child process of queue %r %s", self.queue.name, _how_it_died(child.process.exitcode))
        queued = [slot for _, slot in child.queue]
        child.queue.clear()
        if queued and child.running and not child.clean_exit:
            running = queued.pop(0)
            self._finished(running, _died(running.record.id, child.process.exitcode))
        self._waiting.extendleft(reversed(queued))
        self._dispatch()
        child.gone.set_result(None)

    def _sample(self, child: _Child, limit: float) -> None:
        try:
            rss = psutil.Process(child.process.pid).memory_info().rss
        except psutil.Error:  # it is exiting; its closed pipe tells us
            return
        if rss > limit and child.queue:
            child.timer = None
            self._stop_job(child.queue[0][1], JobMemoryError(
                f"The job used {rss / 2**20:.0f} MiB of memory, over its limit of {limit / 2**20:.0f} MiB"))
        else:
            child.timer = asyncio.get_running_loop().call_later(MEMORY_SAMPLE_INTERVAL, self._sample, child, limit)


@dataclasses.dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    #: Shared with the child, under its lock: [the last job it started, the last it may start].
    gate: Any
    started: asyncio.Future[bool]  # True once ready, False if it died first
    gone: asyncio.Future[None]  # set once it is reaped and its job (if any) reported
    readable: select.poll  # whether a message (or the end of the pipe) is there to read
    #: The jobs handed to it and not reported yet, by sequence number; the first one runs.
    queue: collections.deque[tuple[int, Slot]] = dataclasses.field(default_factory=collections.deque)
    seq: int = 0
    jobs_sent: int = 0
    jobs_done: int = 0
    running: bool = False  # the first job of its queue runs (its limits count)
    retiring: bool = False  # told to exit after its current job
    clean_exit: bool = False  # it said it exits without running its queued jobs
    timer: asyncio.TimerHandle | None = None  # the next memory sample


def _poller(conn: Connection) -> select.poll:
    """A poll object on ``conn``: ``poll(0)`` says whether a message (or the end of the
    pipe) waits, for a seventh of what ``conn.poll()`` costs (it builds a selector each
    time), once per message on both sides of the pipe."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return poller


def _stop_timer(child: _Child) -> None:
    if child.timer is not None:
        child.timer.cancel()
        child.timer = None


def _kill_if_alive(process: BaseProcess) -> None:
    if process.exitcode is None:
        process.kill()


def _how_it_died(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _died(job_id: uuid.UUID, code: int | None) -> execution.Outcome:
    return execution.Outcome.failure(job_id, ChildDiedError(
        f"The child process running the job {_how_it_died(code)} before reporting an outcome "
        "(a crash, os._exit(), or the kernel's out-of-memory killer)"))


#: What a child sends of an outcome: its fields after the first, the job id (the worker
#: knows it by the sequence number), as a tuple, which pickles in a sixth of the time of
#: the dataclass and its UUID; the worker passes them back to Outcome in the same order.
_outcome_fields = operator.attrgetter(*(field.name for field in dataclasses.fields(execution.Outcome)[1:]))
#: Kinds of message from the worker to a child, beside None (exit).
_JOBS, _SKIP = 0, 1
#: The places in a child's gate, and the limit of a child that may start every job.
_STARTED, _LIMIT, _NO_LIMIT = 0, 1, 2**62
#: A child's last message when told to exit: it ran none of its queued jobs.
_RETIRED = "retired"


@dataclasses.dataclass(frozen=True)
class _LoadFailure:
    """A child's message instead of "ready": what went wrong loading the app."""

    traceback: str


def _load(setup: ChildSetup) -> _LoadFailure | None:
    """Load the app in this child as its worker did; what failed, else None."""
    if setup.environ:
        os.environ.clear()
        os.environ.update(setup.environ)
    execution.allow_imports(setup.allowed_imports)
    step = ""
    try:
        for modules, hooks in ((setup.app_modules, app_loaded_hooks), (setup.task_modules, child_init_hooks)):
            for module in modules:
                step = f"importing {module}"
                importlib.import_module(module)
            for hook in hooks:
                step = f"running {getattr(hook, '__qualname__', hook)!r}"
                hook()
    except BaseException:  # noqa: BLE001 - reported to the worker, which stops or logs
        return _LoadFailure(f"{step} failed:\n{traceback.format_exc()}")
    return None


def _leave_fork_server() -> None:
    """A child of the fork server inherits the worker's end of the pipe by which the fork
    server knows the worker is alive. Close it, so that when the worker dies the fork server
    exits, and its children with it (parent-death signal); a task that starts processes
    of its own by forkserver then gets a server of its own. (multiprocessing keeps this
    state in private attributes; absent ones leave nothing to do.)"""
    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if server is None or alive_fd is None:
        return
    os.close(alive_fd)
    server._forkserver_alive_fd = server._forkserver_address = server._forkserver_pid = None


def _child_main(conn: Connection, gate: Any, worker_pid: int, setup: ChildSetup) -> None:
    """A child's life: load the app, say it is ready, then run the jobs it receives in
    order, sending each outcome as it finishes, until told to exit (None: it runs no job
    still queued) or the worker closes the pipe. Between two jobs it reads what arrived:
    more jobs, or a queued job to skip."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # "fork" children inherit the worker's handler…
    signal.set_wakeup_fd(-1)  # …and its event loop's wake-up pipe
    multiprocessing.current_process().daemon = False  # let tasks start processes of their own
    _leave_fork_server()
    # Our parent is the worker, or its fork server (which exits when the worker does).
    parent = os.getppid()
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent or not psutil.pid_exists(worker_pid):  # died before prctl took effect
        return
    if setup.output is not None:
        setup.output.apply()
    failure = _load(setup)
    conn.send_bytes(pickle.dumps(failure))
    if failure is not None:
        return
    queue: collections.deque[tuple[int, Any]] = collections.deque()
    skipped: set[int] = set()
    readable = _poller(conn)
    lock, shared = gate.get_lock(), gate.get_obj()
    try:
        while True:
            while not queue or readable.poll(0):
                message = pickle.loads(conn.recv_bytes())
                if message is None:
                    conn.send_bytes(pickle.dumps(_RETIRED))
                    return
                kind, payload = message
                if kind == _JOBS:
                    queue.extend(payload)
                else:
                    skipped.add(payload)
            seq, record = queue.popleft()
            if seq in skipped:  # already reported as stopped
                skipped.discard(seq)
                continue
            with lock:
                withdrawn = seq > shared[_LIMIT]
                if not withdrawn:
                    shared[_STARTED] = seq
            if withdrawn:  # the worker took it back
                continue
            conn.send_bytes(pickle.dumps((seq, *_outcome_fields(execution.run_sync(record))), pickle.HIGHEST_PROTOCOL))
    except (EOFError, BrokenPipeError):
        return
