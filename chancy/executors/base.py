"""The executor contract: a worker hands over claimed jobs, an executor runs them within
its slots and limits and reports one :class:`~chancy.execution.Outcome` per job."""

from __future__ import annotations

import abc
import uuid
from typing import TYPE_CHECKING, Callable

from chancy.execution import Outcome
from chancy.job import JobRecord

if TYPE_CHECKING:
    from chancy.queue import QueuePlugin

OutcomeCallback = Callable[[Outcome], None]


class Executor(abc.ABC):
    """Runs jobs for one queue, at most ``queue.concurrency`` at a time.

    All methods are called from the worker's event loop. ``on_outcome`` is called exactly
    once per submitted job, on that same loop, when the job has finished (or was stopped
    by a limit, a cancel or a hard shutdown).
    """

    #: Whether this executor can stop a job that overruns its time limit.
    supports_time_limit: bool = False
    #: Whether this executor can stop a job that exceeds its memory limit.
    supports_memory_limit: bool = False
    #: Jobs it accepts per slot: more than one lets it queue the next jobs where they run
    #: (the process executor queues them in its children, to hand them over in batches).
    depth: int = 1
    #: Whether a job runs apart from the worker (a child process), so that no job can
    #: crash the worker: then a job may be handed over before its start is written, and
    #: the executor says when it really starts through :attr:`on_start`.
    isolates_jobs: bool = False

    def __init__(self, queue: "QueuePlugin") -> None:
        self.queue = queue
        self.concurrency = queue.concurrency
        #: Set by the worker: called with a job's id when a job queued here starts to run
        #: (only by executors that :attr:`isolates_jobs`).
        self.on_start: Callable[[uuid.UUID], None] | None = None

    @property
    def capacity(self) -> int:
        """How many jobs it holds at most, running and queued."""
        return self.concurrency * self.depth

    @property
    @abc.abstractmethod
    def free_slots(self) -> int:
        """How many more jobs :meth:`submit` accepts right now (of :attr:`capacity`)."""

    @property
    @abc.abstractmethod
    def running(self) -> set[uuid.UUID]:
        """Ids of the jobs currently running."""

    async def start(self) -> None:  # noqa: B027 - an optional hook: most executors prepare nothing
        """Prepare resources (threads, child processes). Called once before any submit."""

    @abc.abstractmethod
    def submit(self, record: JobRecord, on_outcome: OutcomeCallback) -> None:
        """Start running ``record``; never blocks. Requires a free slot."""

    def withdraw(self) -> list[JobRecord]:
        """Take back the submitted jobs that have not started (queued here), for the
        worker to hand back to their queue when it stops; they get no outcome, and the
        executor takes no more jobs. None by default: a job submitted to an executor of
        depth 1 starts at once."""
        return []

    @abc.abstractmethod
    def cancel(self, job_id: uuid.UUID) -> bool:
        """Stop a running job as soon as possible; its outcome is a cancelled failure.
        Returns False when the job is not running here."""

    @abc.abstractmethod
    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs and let running ones finish for up to ``timeout`` seconds
        (None: wait for all); then stop the rest hard, reporting each as failed."""
