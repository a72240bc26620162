"""The cluster's side of the in-memory store (:class:`chancy.store.cluster.ClusterStore`):
heartbeats and recovery, pruning, queue settings and the leader seat, kept in the state
the app's in-memory queues share (:class:`chancy.store.memory._Shared`), each rule the
Postgres statements keep (``sql/cluster.sql``, ``sql/worker.sql``,
``sql/queue_settings.sql``) kept here once. The contract suite
(``tests/store/test_cluster_contract.py``) runs the same tests on both."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence

from chancy.job import FINISHED_STATES, JobRecord, JobState
from chancy.queue import Transition
from chancy.store.cluster import FOREVER, QueueChange, QueueSettings
from chancy.store.memory_schedules import MemorySchedules
from chancy.store.memory import FOREVER_AT, MemoryQueue, QueueRow, _now, _Shared, queues_of, shared_of

if TYPE_CHECKING:
    from chancy.hooks import Hooks

#: The states a purge of a deleted queue removes (its waiting jobs).
WAITING_STATES = (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING)


class MemoryLeaderLock:
    """A hold on the in-memory store's leader seat: one holder at a time in this process."""

    def __init__(self, shared: _Shared, worker_id: str) -> None:
        self._shared = shared
        self._worker_id = worker_id

    async def open(self) -> None:
        return None

    async def try_lock(self) -> bool:
        with self._shared.lock:
            if self._shared.leader in (None, self._worker_id):
                self._shared.leader = self._worker_id
            return self._shared.leader == self._worker_id

    async def depose_dead_leader(self) -> bool:
        with self._shared.lock:
            leader = self._shared.leader
            if leader is None or leader == self._worker_id:
                return False
            expiry = self._shared.workers.get(leader)
            if expiry is not None and expiry > _now():  # alive: no live worker names a dead one
                return False
            self._shared.leader = None
            return True

    async def probe(self, timeout: float) -> None:
        """Raises once the seat is no longer this holder's (deposed as dead meanwhile)."""
        if self._shared.leader != self._worker_id:
            raise RuntimeError(f"worker {self._worker_id} no longer holds the leader seat")

    async def close(self) -> None:
        with self._shared.lock:
            if self._shared.leader == self._worker_id:
                self._shared.leader = None


class MemoryCluster:
    """The cluster facet of an app's in-memory store (get it with :func:`memory_cluster`)."""

    def __init__(self, app: Any, shared: _Shared) -> None:
        self._app = app
        self.shared = shared
        self.schedules = MemorySchedules(app)
        self._settings_watchers: list[tuple[Callable[[], None], asyncio.AbstractEventLoop]] = []

    def _queues(self) -> list[MemoryQueue]:
        return queues_of(self._app)

    def _rows(self) -> list[tuple[MemoryQueue, JobRecord]]:
        """Every job of the store with its queue; the caller holds the lock."""
        return [(queue, record) for queue in self._queues() for record in queue._rows.values()]

    # --- liveness and recovery ---------------------------------------------------------
    async def heartbeat(self, worker_id: str, *, hostname: str, pid: int, queues: Sequence[str],
                        tags: Sequence[str], running: Sequence[uuid.UUID], ttl: float) -> list[uuid.UUID]:
        with self.shared.lock:
            self.shared.workers[worker_id] = _now() + timedelta(seconds=ttl)
            rows = {record.id: record for _, record in self._rows()}
        return [job_id for job_id in running if job_id in rows
                and (rows[job_id].state is not JobState.RUNNING or rows[job_id].taken_by != worker_id)]

    async def deregister(self, worker_id: str) -> None:
        with self.shared.lock:
            self.shared.workers.pop(worker_id, None)

    async def recover(self, batch: int, hooks: Hooks) -> dict[uuid.UUID, str]:
        now = _now()
        recovered: dict[uuid.UUID, str] = {}
        failed: list[JobRecord] = []
        pushed: set[MemoryQueue] = set()
        with self.shared.lock:
            workers = self.shared.workers
            for dead in [worker_id for worker_id, expiry in workers.items() if expiry < now]:
                del workers[dead]
            lost = [(queue, record) for queue, record in self._rows()
                    if record.state is JobState.RUNNING and record.taken_by not in workers][:batch]
            for queue, record in lost:
                back = _recovered(record, now)
                queue._rows[record.id] = back
                recovered[record.id] = back.state.value
                if back.state is JobState.FAILED:
                    failed.append(back)
                    queue._announce_done(record.id)
                else:
                    pushed.add(queue)
        for queue in pushed:
            queue._announce_push()
        for record in failed:  # the hooks hear of it; their follow-ups are statements: none to run here
            hooks.with_follow_ups(record, Transition(record.id, JobState.FAILED, error=record.errors[-1]))
        return recovered

    async def prune(self, states: Sequence[str], older_than: float, queues: Sequence[str] | None,
                    batch: int) -> int:
        chosen = {JobState(state) for state in states} & FINISHED_STATES
        cutoff = _now() - timedelta(seconds=older_than)
        with self.shared.lock:
            doomed = sorted(((queue, record) for queue, record in self._rows()
                             if record.state in chosen and record.completed_at is not None
                             and record.completed_at < cutoff and (queues is None or record.queue in queues)),
                            key=lambda pair: pair[1].completed_at or cutoff)[:batch]
            for queue, record in doomed:
                del queue._rows[record.id]
        return len(doomed)

    # --- queue settings -------------------------------------------------------------------
    def watch_settings(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` (on the running event loop) whenever a queue's settings change:
        the in-memory store's workers hear of it this way; returns the unsubscribe."""
        entry = (on_change, asyncio.get_running_loop())
        self._settings_watchers.append(entry)
        return lambda: self._settings_watchers.remove(entry)

    def _announce_settings(self) -> None:
        for on_change, loop in list(self._settings_watchers):
            loop.call_soon_threadsafe(on_change)

    def queue_settings_sync(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        now = _now()
        with self.shared.lock:
            rows = sorted((name, row) for name, row in self.shared.queue_settings.items()
                          if names is None or name in names)
            return [QueueSettings(name, row.concurrency,
                                  row.paused_until if row.paused_until and row.paused_until > now else None,
                                  row.rate_limit, row.rate_period, row.updated_at) for name, row in rows]

    async def queue_settings(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        return self.queue_settings_sync(names)

    def change_queue_sync(self, name: str, change: QueueChange) -> None:
        now = _now()
        with self.shared.lock:
            row = self.shared.queue_settings.setdefault(name, QueueRow())
            if change.set_concurrency:
                row.concurrency = change.concurrency
            if change.set_pause:
                row.paused_until = _pause_end(change.pause, now)
            if change.set_rate:
                row.rate_limit, row.rate_period = change.rate if change.rate else (None, None)
            row.updated_at = now
        self._announce_settings()

    async def change_queue(self, name: str, change: QueueChange) -> None:
        self.change_queue_sync(name, change)

    def delete_queue_sync(self, name: str, purge: bool) -> int:
        with self.shared.lock:
            self.shared.queue_settings.pop(name, None)
            purged = [(queue, record.id) for queue, record in self._rows()
                      if purge and record.queue == name and record.state in WAITING_STATES]
            for queue, job_id in purged:
                del queue._rows[job_id]
        self._announce_settings()
        return len(purged)

    async def delete_queue(self, name: str, purge: bool) -> int:
        return self.delete_queue_sync(name, purge)

    # --- leadership ---------------------------------------------------------------------------
    def leader_lock(self, worker_id: str) -> MemoryLeaderLock:
        return MemoryLeaderLock(self.shared, worker_id)

    async def current_leader(self) -> str | None:
        return self.shared.leader


def _recovered(record: JobRecord, now: datetime) -> JobRecord:
    """A job lost with its worker, sent back by recovery's rule (see ``recover`` in
    ``sql/cluster.sql``)."""
    if record.started_at is None:  # prefetched, never started: as if never claimed
        return dataclasses.replace(record, state=JobState.PENDING, attempts=max(record.attempts - 1, 0),
                                   taken_by=None)
    error = {"type": "chancy.WorkerLost",
             "message": f"worker {record.taken_by} stopped heartbeating while running attempt "
                        f"{record.attempts} of {record.max_attempts}",
             "traceback": None, "at": now.isoformat(), "attempt": record.attempts, "worker": record.taken_by}
    errors = [*record.errors, error]
    if record.attempts < record.max_attempts:
        retrying = dataclasses.replace(record, state=JobState.RETRYING, errors=errors, completed_at=None)
        return dataclasses.replace(retrying, scheduled_at=now + timedelta(seconds=retrying.retry_delay()))
    return dataclasses.replace(record, state=JobState.FAILED, errors=errors, completed_at=now)


def _pause_end(pause: datetime | float | None, now: datetime) -> datetime | None:
    if pause is None or isinstance(pause, datetime):
        return pause
    return FOREVER_AT if pause == FOREVER else now + timedelta(seconds=pause)


_clusters: "weakref.WeakKeyDictionary[Any, MemoryCluster]" = weakref.WeakKeyDictionary()


def memory_cluster(app: Any) -> MemoryCluster:
    """The cluster facet of the app's current in-memory store."""
    shared = shared_of(app)
    cluster = _clusters.get(app)
    if cluster is None or cluster.shared is not shared:
        cluster = _clusters[app] = MemoryCluster(app, shared)
    return cluster
