"""The job store contract: the lifecycle of a job that every queue's storage implements
(the Postgres rows of :class:`chancy.queues.pg.Queue`, the dict of
:class:`chancy.store.memory.MemoryQueue`), so apps, workers and tests can rely on the
same behaviour whichever holds the jobs.

A job is pushed (PENDING, or SCHEDULED until its ``scheduled_at``), claimed by a worker
(RUNNING, ``taken_by`` that worker, one more attempt), and written back by that worker
(SUCCEEDED, FAILED, CANCELLED, or RETRYING until its delay passed); a live job can be
cancelled, a finished one requeued. Every operation has an async form; those a caller
without an event loop needs (pushing, reading, waiting, cancelling, requeueing) have a
``*_sync`` twin with the same contract."""

from __future__ import annotations

import abc
import uuid
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from chancy.job import Job, JobRecord
    from chancy.queue import Transition, Verdict
    from chancy.rate_limits import RateLimit


class JobStore(Protocol):
    """The storage operations of one named queue (``name``). A class that declares it
    implements this store (subclasses it) must define every abstract method; the others
    are part of the contract too but a base class may give them a default (see
    :class:`chancy.queue.QueuePlugin`)."""

    name: str

    # --- pushing -------------------------------------------------------------------
    @abc.abstractmethod
    async def push(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        """Store ``jobs`` as one batch: all or none (a job that cannot be stored, e.g. its
        arguments do not serialise, stores none of them). With ``connection`` (a store that
        has transactions), inside the caller's transaction: committed or rolled back with
        it; a store without transactions refuses a connection (``TypeError``). Returns the
        ids in the order of ``jobs``: the job's own ``id`` if it set one, else a new one;
        for a job whose ``unique_key`` a live job (pending, scheduled, running, retrying)
        already holds, that job's id and nothing stored. A job is runnable at once unless
        its ``scheduled_at`` is in the future. Workers waiting on the queue hear of it."""

    @abc.abstractmethod
    def push_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        """:meth:`push`, for callers without an event loop (a sync connection, if any)."""

    @abc.abstractmethod
    async def push_calls(self, template: Job, calls: Sequence[Sequence[Any]],
                         connection: Any = None) -> list[uuid.UUID]:
        """``task.push_many``: one job per call of ``template`` (each call its positional
        arguments, everything else the template's), as :meth:`push` of those jobs would:
        same result, same all-or-none. A store may store them without a :class:`Job` each."""

    @abc.abstractmethod
    def push_calls_sync(self, template: Job, calls: Sequence[Sequence[Any]],
                        connection: Any = None) -> list[uuid.UUID]:
        """:meth:`push_calls`, for callers without an event loop."""

    # --- reading and waiting ---------------------------------------------------------
    @abc.abstractmethod
    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        """The job as stored now; None if there is no such job (never pushed, or pruned)."""

    @abc.abstractmethod
    def get_sync(self, job_id: uuid.UUID) -> JobRecord | None:
        """:meth:`get`, for callers without an event loop."""

    @abc.abstractmethod
    async def wait(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        """Block until the job is finished (succeeded, failed, cancelled or expired) and
        return it as finished; at once if it already is. ``timeout`` seconds at most (None:
        no limit), then ``TimeoutError``; ``KeyError`` if there is no such job. A waiter
        wakes when the job finishes, not by polling alone."""

    @abc.abstractmethod
    def wait_sync(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        """:meth:`wait`, for callers without an event loop."""

    # --- cancelling and requeueing -----------------------------------------------------
    @abc.abstractmethod
    async def cancel(self, job_id: uuid.UUID) -> bool:
        """Cancel a live job: it finishes CANCELLED now, and if it is running its worker is
        told to stop it (the worker's late outcome then changes nothing). False, and nothing
        changed, if the job is finished or unknown."""

    @abc.abstractmethod
    def cancel_sync(self, job_id: uuid.UUID) -> bool:
        """:meth:`cancel`, for callers without an event loop."""

    @abc.abstractmethod
    async def requeue(self, job_id: uuid.UUID) -> bool:
        """Run a failed, cancelled or expired job again: PENDING now, with room for one
        more attempt than it used (its attempts and errors kept). False, and nothing
        changed, for a live, succeeded or unknown job."""

    @abc.abstractmethod
    def requeue_sync(self, job_id: uuid.UUID) -> bool:
        """:meth:`requeue`, for callers without an event loop."""

    # --- the worker's side ---------------------------------------------------------------
    @abc.abstractmethod
    def watch(self, on_pushed: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]) -> Callable[[], None]:
        """Tell a worker in this process about pushes (``on_pushed``) and cancels
        (``on_cancel(job_id)``) that it cannot hear through the database, called on the
        event loop that was running when it subscribed; returns the unsubscribe function.
        A store whose workers hear both through the database does nothing here."""

    @abc.abstractmethod
    async def claim(self, worker_id: str, limit: int, start: int | None = None) -> list[JobRecord]:
        """Atomically take up to ``limit`` runnable jobs of this queue for ``worker_id``:
        pending ones and scheduled or retrying ones whose time has come, highest priority
        first, then oldest (smallest id: ids grow with time). Returned in that order, each
        RUNNING, ``taken_by == worker_id``, its attempt counted; no job is handed to two
        claims. A runnable job past its ``expires_at`` is not returned: it finishes EXPIRED
        (and its waiters wake); the Postgres store counts such jobs in ``limit`` (so a claim
        may return fewer jobs while more are runnable). A store that can hand unstarted jobs back
        (:meth:`release_unknown`) marks only the first ``start`` of them started (None:
        all); the others are prefetched, their ``started_at`` None until the worker starts
        them. A store that cannot ignores ``start``."""

    @abc.abstractmethod
    async def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> None:
        """Apply the outcomes of jobs ``worker_id`` runs. An outcome is ignored (its row
        left as it is) when the job is no longer RUNNING under ``worker_id`` (cancelled,
        or recovered and claimed again) or when its ``attempt`` is set and is not the
        job's current attempt. An error is appended to the job's errors with its attempt;
        a result replaces the job's result; RETRYING makes the job runnable again after
        ``delay`` seconds; every other state finishes it (and wakes its waiters).
        ``max_attempts`` set replaces the job's budget. A transition's ``follow_up`` runs
        in the same transaction, only if its outcome applied (its statements are SQL: the
        in-memory store has none to run)."""

    @abc.abstractmethod
    async def write_back_and_claim(self, worker_id: str, transitions: Sequence[Transition],
                                   limit: int, start: int | None = None) -> list[JobRecord]:
        """:meth:`write_back` then :meth:`claim`, with the contracts of both: a worker whose
        finished jobs freed the slots it claims for. A store may do both at once (one round
        trip); the outcomes are applied before the claim picks its jobs."""

    @abc.abstractmethod
    async def release_unknown(self, worker_id: str, owned: Collection[uuid.UUID], *,
                              previous_life: bool = False) -> list[uuid.UUID]:
        """Hand back to the queue the jobs it has RUNNING under ``worker_id`` that are not in
        ``owned`` (the worker never heard it claimed them: the claim's answer was lost), as
        if never claimed (their attempt refunded); returns their ids. ``previous_life``:
        the worker just started, so such jobs were run by an earlier process with the same
        id, and their attempt counts (as recovery counts it). A store whose claims cannot
        lose their answer has none: it returns ``[]``."""

    @abc.abstractmethod
    async def gate(self, worker_id: str, records: Sequence[JobRecord],
                   limits: Mapping[str, RateLimit]) -> Verdict:
        """Of the just-claimed ``records`` (all of tasks in ``limits``), start those that fit
        in their task's rate window (counted across every worker sharing the store) and
        hand the others back, their attempt refunded, to run when they fit (a claim does
        not return them before). The verdict: the admitted ids, and in how many seconds
        the first one handed back is due (None: none). A store that cannot count starts
        admits every job."""
