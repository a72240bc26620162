"""An in-process queue implementing the same contract as the Postgres queue
(:class:`chancy.store.protocol.JobStore`), for unit tests of code that pushes and runs
jobs. Jobs live in this process only: nothing is durable and other processes cannot see
them. Each rule the Postgres store keeps in SQL is kept here once, in Python; the contract
suite (tests/store/test_contract.py) runs the same tests on both and names each pair."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import threading
import time
import uuid
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

from chancy import serialization
from chancy.job import LIVE_STATES, Job, JobRecord, JobState, new_job_id
from chancy.queue import QueuePlugin, Transition, Verdict
from chancy.rate_limits import RateLimit, TaskWindow, gate_order, settle


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _best(record: JobRecord) -> tuple[int, uuid.UUID]:
    """A claim's order: the highest priority, then the oldest (ids grow with time)."""
    return -record.priority, record.id


@dataclasses.dataclass
class _Shared:
    """What the in-memory queues of one app share, as the Postgres queues of one database
    share their tables: one lock (ids and unique keys are one space across queues, and any
    queue reads or changes any job), the waiters of jobs, and the task start counts of the
    rate gate. The jobs themselves stay with their queue (an in-memory block of
    :mod:`chancy.testing` drops its queues, and their jobs with them)."""

    lock: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    async_waiters: dict[uuid.UUID, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = dataclasses.field(
        default_factory=dict)
    task_windows: dict[str, TaskWindow] = dataclasses.field(default_factory=dict)
    #: The cluster's state (:mod:`chancy.store.memory_cluster`): each live worker's expiry,
    #: each queue's runtime settings (what the claim obeys), and the leader's worker id.
    workers: dict[str, datetime] = dataclasses.field(default_factory=dict)
    queue_settings: dict[str, "QueueRow"] = dataclasses.field(default_factory=dict)
    leader: str | None = None


@dataclasses.dataclass
class QueueRow:
    """A queue's runtime settings as the in-memory store keeps them (``paused_until``
    :data:`FOREVER_AT` when paused until resumed), and the latest starts its rate limit
    counts."""

    concurrency: int | None = None
    paused_until: datetime | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    rate_starts: list[datetime] = dataclasses.field(default_factory=list)
    updated_at: datetime = dataclasses.field(default_factory=lambda: _now())

    def room(self, now: datetime, limit: int) -> int:
        """How many of ``limit`` jobs the queue may start now: none while paused, and no
        more than its rate limit leaves in the current window."""
        if self.paused_until is not None and self.paused_until > now:
            return 0
        if self.rate_limit is None or self.rate_period is None:
            return limit
        since = now - timedelta(seconds=self.rate_period)
        return max(0, min(limit, self.rate_limit - sum(start > since for start in self.rate_starts)))

    def started(self, now: datetime, count: int) -> None:
        """``count`` jobs started now (only the latest ``rate_limit`` starts are kept:
        enough to count any window)."""
        if self.rate_limit is not None and count:
            self.rate_starts = (self.rate_starts + [now] * count)[-self.rate_limit:]


#: A pause with no end, as a time (what Postgres' ``infinity`` reads as).
FOREVER_AT = datetime(9999, 12, 31, tzinfo=timezone.utc)


_shared_by_app: "weakref.WeakKeyDictionary[Any, _Shared]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def separate_store(app: Any) -> Iterator[None]:
    """Within the block, the in-memory queues bound to ``app`` share a new, empty store
    (no rate windows, workers, queue settings or leader of before); the app's previous
    one comes back after (an in-memory block of :mod:`chancy.testing`)."""
    previous = _shared_by_app.pop(app, None)
    try:
        yield
    finally:
        _shared_by_app.pop(app, None)
        if previous is not None:
            _shared_by_app[app] = previous


def queues_of(app: Any) -> list["MemoryQueue"]:
    """The app's in-memory queues of its current store (what a cluster chore walks)."""
    shared = _shared_by_app.get(app)
    return [q for q in app.queues.values() if isinstance(q, MemoryQueue) and q._shared is shared]


def shared_of(app: Any) -> _Shared:
    """The app's current in-memory store state (made if the app has none yet)."""
    return _shared_by_app.setdefault(app, _Shared())


class MemoryQueue(QueuePlugin):
    """Same semantics as :class:`chancy.queues.pg.Queue` (priorities, scheduling,
    unique keys, retries, cancellation, owner-guarded write-back), kept in a dict. The
    in-memory queues of one app are one store: a job is found, cancelled or requeued
    through any of them, and a unique key or an id is taken across all of them."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        self._rows: dict[uuid.UUID, JobRecord] = {}
        self._shared = _Shared()
        self._watchers: list[tuple[Callable[[], None], Callable[[uuid.UUID], None], asyncio.AbstractEventLoop]] = []

    def bind(self, app: Any) -> None:
        super().bind(app)
        self._shared = shared_of(app)

    @property
    def _lock(self) -> threading.Condition:
        return self._shared.lock

    def _store(self) -> list["MemoryQueue"]:
        """The queues whose jobs this one sees: the app's current in-memory queues (itself
        first), or itself alone."""
        app_queues = list(self.app.queues.values()) if self.app is not None else []
        return [self, *(q for q in app_queues if isinstance(q, MemoryQueue) and q is not self
                        and q._shared is self._shared)]

    def _find(self, job_id: uuid.UUID) -> tuple["MemoryQueue", JobRecord] | None:
        """The job and the queue that holds it; the caller holds the lock."""
        for queue in self._store():
            record = queue._rows.get(job_id)
            if record is not None:
                return queue, record
        return None

    # --- notifications -----------------------------------------------------------------------
    def watch(self, on_pushed: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]) -> Callable[[], None]:
        entry = (on_pushed, on_cancel, asyncio.get_running_loop())
        self._watchers.append(entry)
        return lambda: self._watchers.remove(entry)

    def _announce_push(self) -> None:
        for on_pushed, _, loop in list(self._watchers):
            loop.call_soon_threadsafe(on_pushed)

    def _announce_cancel(self, job_id: uuid.UUID) -> None:
        for _, on_cancel, loop in list(self._watchers):
            loop.call_soon_threadsafe(on_cancel, job_id)

    def _announce_done(self, job_id: uuid.UUID) -> None:
        """Wake waiters; the caller holds the lock."""
        self._lock.notify_all()
        for loop, event in self._shared.async_waiters.get(job_id, ()):
            loop.call_soon_threadsafe(event.set)

    # --- pushing -------------------------------------------------------------------------------
    def push_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        if connection is not None:
            raise TypeError("the in-memory queue has no transactions: push without a connection")
        rows = [self._new_row(job) for job in jobs]  # serialises first, so a bad job inserts nothing
        ids = []
        with self._lock:
            given = [job.id for job in jobs if job.id is not None]
            if len(set(given)) < len(given) or any(self._find(job_id) for job_id in given):
                raise RuntimeError("job ids collided on insert; pass unique ids or none")
            for row in rows:
                holder = self._live_holder(row.unique_key)
                if holder is not None:
                    ids.append(holder)
                    continue
                self._rows[row.id] = row
                ids.append(row.id)
        self._announce_push()
        return ids

    async def push(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        return self.push_sync(jobs, connection)

    def _new_row(self, job: Job) -> JobRecord:
        args_json, kwargs_json = serialization.dumps_arguments(job.func, job.args, job.kwargs)
        now = _now()
        scheduled_at = job.scheduled_at or now
        return JobRecord(
            id=job.id or new_job_id(), queue=self.name, func=job.func,
            args=tuple(serialization.loads(args_json)), kwargs=serialization.loads(kwargs_json),
            priority=job.priority,
            state=JobState.SCHEDULED if scheduled_at > now else JobState.PENDING,
            attempts=0, max_attempts=job.max_attempts, scheduled_at=scheduled_at,
            expires_at=job.expires_at, created_at=now, started_at=None, completed_at=None,
            taken_by=None, unique_key=job.unique_key, limits=job.limits, backoff=job.backoff,
            meta=serialization.loads(serialization.dumps_meta(job.func, job.meta)), result=None, errors=[],
            concurrency_key=job.concurrency_key, concurrency=job.concurrency,
        )

    def _live_holder(self, unique_key: str | None) -> uuid.UUID | None:
        """The live job of any queue holding ``unique_key``; the caller holds the lock."""
        if unique_key is None:
            return None
        return next((r.id for queue in self._store() for r in queue._rows.values()
                     if r.unique_key == unique_key and r.state in LIVE_STATES), None)

    # --- reading and waiting --------------------------------------------------------------------
    def get_sync(self, job_id: uuid.UUID) -> JobRecord | None:
        with self._lock:
            found = self._find(job_id)
        return None if found is None else found[1]

    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        return self.get_sync(job_id)

    def records(self) -> list[JobRecord]:
        """Every job this queue holds, in push order (what a test asserts on)."""
        with self._lock:
            return list(self._rows.values())

    def wait_sync(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                found = self._find(job_id)
                if found is None:
                    raise KeyError(f"No job with id {job_id}")
                if found[1].is_finished:
                    return found[1]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"Job {job_id} did not finish within {timeout} s")
                self._lock.wait(remaining)

    async def wait(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        waiters = self._shared.async_waiters
        with self._lock:
            waiters.setdefault(job_id, []).append(entry)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event.clear()
                    record = self.get_sync(job_id)
                    if record is None:
                        raise KeyError(f"No job with id {job_id}")
                    if record.is_finished:
                        return record
                    await event.wait()
        except TimeoutError:
            raise TimeoutError(f"Job {job_id} did not finish within {timeout} s") from None
        finally:
            with self._lock:
                waiters[job_id].remove(entry)
                if not waiters[job_id]:
                    del waiters[job_id]

    # --- cancelling and requeueing ---------------------------------------------------------------
    def cancel_sync(self, job_id: uuid.UUID) -> bool:
        with self._lock:
            found = self._find(job_id)
            if found is None or found[1].state not in LIVE_STATES:
                return False
            owner, record = found
            owner._rows[job_id] = dataclasses.replace(record, state=JobState.CANCELLED, completed_at=_now())
            self._announce_done(job_id)
        owner._announce_cancel(job_id)
        return True

    async def cancel(self, job_id: uuid.UUID) -> bool:
        return self.cancel_sync(job_id)

    def requeue_sync(self, job_id: uuid.UUID) -> bool:
        """Refused (False) while another live job holds the job's unique key: the key's
        live holder wins, as at a push."""
        with self._lock:
            found = self._find(job_id)
            if found is None or found[1].state not in (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED):
                return False
            owner, record = found
            if self._live_holder(record.unique_key) is not None:
                return False
            owner._rows[job_id] = dataclasses.replace(
                record, state=JobState.PENDING, scheduled_at=_now(), completed_at=None, taken_by=None,
                max_attempts=max(record.max_attempts, record.attempts + 1),
            )
        owner._announce_push()
        return True

    async def requeue(self, job_id: uuid.UUID) -> bool:
        return self.requeue_sync(job_id)

    # --- the worker's side ---------------------------------------------------------------------------
    async def claim(self, worker_id: str, limit: int, start: int | None = None) -> list[JobRecord]:
        """The Postgres claim's rule: the best ``limit`` pending jobs and the ``limit`` due
        the earliest (each kind as its own index reads them), the best of those first.
        Every runnable job past its expiry finishes expired first, and takes no slot."""
        now = _now()
        with self._lock:
            settings = self._shared.queue_settings.get(self.name)
            if settings is not None:
                limit = settings.room(now, limit)
                if limit == 0:
                    return []
            live = []
            for record in list(self._rows.values()):
                if not (record.state is JobState.PENDING
                        or (record.state in (JobState.SCHEDULED, JobState.RETRYING) and record.scheduled_at <= now)):
                    continue
                if record.expires_at is not None and record.expires_at <= now:
                    self._rows[record.id] = dataclasses.replace(record, state=JobState.EXPIRED, completed_at=now)
                    self._announce_done(record.id)
                else:
                    live.append(record)
            claimed = [dataclasses.replace(record, state=JobState.RUNNING, attempts=record.attempts + 1,
                                           started_at=now, taken_by=worker_id)
                       for record in self._choose(live, limit)]
            self._rows.update((record.id, record) for record in claimed)
            if settings is not None:
                settings.started(now, len(claimed))
        return claimed

    def _choose(self, live: list[JobRecord], limit: int) -> list[JobRecord]:
        """The Postgres claims' choice among runnable jobs: the best ``limit`` pending and
        the ``limit`` due the earliest (each kind as its own index reads them), the best of
        those first; a job with a concurrency key only while fewer than its limit of its
        key run in this queue (jobs of a full key are passed over, not waited for), and as
        the keyed claim does, chosen again for the places a crowded key left; in a fair
        queue, taking turns between keys; the caller holds the lock."""
        running = collections.Counter(r.concurrency_key for r in self._rows.values()
                                      if r.state is JobState.RUNNING and r.concurrency_key is not None)

        def free(record: JobRecord) -> bool:
            return record.concurrency_key is None or running[record.concurrency_key] < (record.concurrency or 1)

        if self.fair_keys:
            return self._take_turns([r for r in live if free(r)], limit, running)
        chosen: list[JobRecord] = []
        while len(chosen) < limit:
            wanted = limit - len(chosen)
            open_ = [r for r in live if free(r)]
            ready = heapq.nsmallest(wanted, (r for r in open_ if r.state is JobState.PENDING), key=_best)
            due = heapq.nsmallest(wanted, (r for r in open_ if r.state is not JobState.PENDING),
                                  key=lambda r: (r.scheduled_at, r.id))
            crowded = False
            for record in heapq.nsmallest(wanted, ready + due, key=_best):
                if not free(record):
                    crowded = True
                    continue
                chosen.append(record)
                if record.concurrency_key is not None:
                    running[record.concurrency_key] += 1
            if not crowded:
                return chosen
            taken = {r.id for r in chosen}
            live = [r for r in live if r.id not in taken]
        return chosen

    @staticmethod
    def _take_turns(open_: list[JobRecord], limit: int, running: collections.Counter) -> list[JobRecord]:
        """A fair queue's choice (the Postgres claim_keyed_heads with fair on): each key's
        jobs that fit its free places (jobs without a key are one more key), then each
        key's best job, by priority then age, before a second job of any key."""
        due = heapq.nsmallest(limit, (r for r in open_ if r.state is not JobState.PENDING),
                              key=lambda r: (r.scheduled_at, r.id))
        taken: collections.Counter = collections.Counter()
        turns = []
        for record in sorted([r for r in open_ if r.state is JobState.PENDING] + due, key=_best):
            key = record.concurrency_key
            taken[key] += 1
            if key is None or running[key] + taken[key] <= (record.concurrency or 1):
                turns.append((taken[key], _best(record), record))
        return [record for *_, record in heapq.nsmallest(limit, turns, key=lambda turn: turn[:2])]

    async def gate(self, worker_id: str, records: Sequence[JobRecord], limits: Mapping[str, RateLimit]) -> Verdict:
        """Counted in this process, across the app's in-memory queues (see
        :func:`chancy.rate_limits.settle`)."""
        now = _now()
        windows = self._shared.task_windows
        admitted: set[uuid.UUID] = set()
        due_times: list[datetime] = []
        with self._lock:
            for task in sorted({r.func for r in records}):
                ordered = gate_order(r for r in records if r.func == task)
                for job_id, due in settle(windows.setdefault(task, TaskWindow()), ordered, limits[task], now).items():
                    if due is None:
                        admitted.add(job_id)
                        self._start(worker_id, job_id, now)
                    else:
                        self._hand_back(worker_id, job_id, due)
                        due_times.append(due)
        next_due = (min(due_times) - now).total_seconds() if due_times else None
        return Verdict(frozenset(admitted), None if next_due is None else max(0.0, next_due))

    def _held_by(self, worker_id: str, job_id: uuid.UUID) -> JobRecord | None:
        """The job's row while ``worker_id`` runs it (the guard of every write by a worker);
        the caller holds the lock."""
        record = self._rows.get(job_id)
        if record is None or record.state is not JobState.RUNNING or record.taken_by != worker_id:
            return None
        return record

    def _start(self, worker_id: str, job_id: uuid.UUID, now: datetime) -> None:
        """An admitted job starts now, the time its task's window counts (as the Postgres
        gate records it); the caller holds the lock."""
        record = self._held_by(worker_id, job_id)
        if record is not None:
            self._rows[job_id] = dataclasses.replace(record, started_at=now)

    def _hand_back(self, worker_id: str, job_id: uuid.UUID, due: datetime) -> None:
        """A claimed job waits until ``due``, its attempt given back; the caller holds the lock."""
        record = self._held_by(worker_id, job_id)
        if record is None:
            return
        self._rows[job_id] = dataclasses.replace(
            record, state=JobState.RETRYING if record.attempts > 1 else JobState.SCHEDULED,
            attempts=record.attempts - 1, taken_by=None, started_at=None, scheduled_at=due)

    async def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> None:
        now = _now()
        due_now = False
        with self._lock:
            for t in transitions:
                record = self._held_by(worker_id, t.job_id)
                if record is None or t.attempt not in (None, record.attempts):
                    continue  # cancelled or recovered meanwhile: this late outcome changes nothing
                errors = record.errors + ([{**t.error, "attempt": record.attempts}] if t.error else [])
                retrying = t.state is JobState.RETRYING
                self._rows[t.job_id] = dataclasses.replace(
                    record, state=t.state, errors=errors,
                    result=serialization.loads(t.result_json) if t.result_json is not None else record.result,
                    scheduled_at=now + timedelta(seconds=t.delay or 0) if retrying else record.scheduled_at,
                    max_attempts=t.max_attempts or record.max_attempts,
                    completed_at=None if retrying else now,
                )
                if not retrying:
                    self._announce_done(t.job_id)
                # a retry due now, or a keyed job's place freed: workers claim again at once
                due_now = due_now or (retrying and (t.delay or 0) <= 0) or record.concurrency_key is not None
        if due_now:
            self._announce_push()
