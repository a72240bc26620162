"""The cluster's side of the store: what the workers of one store share besides the jobs
themselves — who is alive (heartbeats) and the recovery of what a dead one held, the
pruning of finished jobs, the runtime settings of queues, the leader's seat, and the cron
schedules. Implemented by Postgres (:class:`chancy.store.pg.cluster_store.PgCluster`) and
in memory (:class:`chancy.store.memory_cluster.MemoryCluster`); the contract suite
(``tests/store/test_cluster_contract.py``) runs the same tests on both. Reach an app's with
:func:`chancy.store.of_app.cluster_of`."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from chancy.hooks import Hooks
    from chancy.store.schedules import ScheduleStore

#: A pause with no end, as :meth:`ClusterStore.change_queue` takes it.
FOREVER = float("inf")


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """A queue's runtime settings (``None``: the code's own setting applies). An
    open-ended pause reads as ``paused_until`` = 9999-12-31 UTC."""

    name: str
    concurrency: int | None
    paused_until: datetime | None
    rate_limit: int | None
    rate_period: float | None
    updated_at: datetime

    @property
    def paused(self) -> bool:
        """Paused as of when the settings were read (an ``until`` may have passed since)."""
        return self.paused_until is not None

    @property
    def paused_until_resumed(self) -> bool:
        """Paused with no end time."""
        return self.paused_until is not None and self.paused_until.year == datetime.max.year


@dataclasses.dataclass(frozen=True)
class QueueChange:
    """What :meth:`ClusterStore.change_queue` changes: only the settings flagged ``set_*``
    (the others keep their value; a queue without settings gets them). ``pause`` is an end
    time, seconds from now on the store's clock, :data:`FOREVER`, or None (resumed)."""

    concurrency: int | None = None
    set_concurrency: bool = False
    pause: datetime | float | None = None
    set_pause: bool = False
    rate: tuple[int, float] | None = None  # (starts, per seconds)
    set_rate: bool = False


class LeaderLock(Protocol):
    """One worker's hold on the cluster's leader seat: at most one holder at a time in the
    whole store; a holder that dies loses it at once (its session or process ends)."""

    async def open(self) -> None:
        """Get ready to try (e.g. open the session the lock lives on)."""

    async def try_lock(self) -> bool:
        """Take the seat if free: True if this holder has it now (taken or held already)."""

    async def depose_dead_leader(self) -> bool:
        """End the current holder's hold if its worker is past its liveness timeout (dead
        by the rule recovery uses): whether one was ended."""

    async def probe(self, timeout: float) -> None:
        """Raises if the hold can no longer be vouched for within ``timeout`` seconds (a
        dead link): the holder must step down."""

    async def close(self) -> None:
        """Give the seat up (a successor may take it as soon as this returns); quietly."""


class ClusterStore(Protocol):
    """The cluster's shared state (see the module's docstring). Times are the store's
    clock (the database's for Postgres), never a worker host's."""

    @property
    def schedules(self) -> ScheduleStore:
        """The cron schedules of every namespace."""

    # --- liveness and recovery ---------------------------------------------------------
    async def heartbeat(self, worker_id: str, *, hostname: str, pid: int, queues: Sequence[str],
                        tags: Sequence[str], running: Sequence[uuid.UUID], ttl: float) -> list[uuid.UUID]:
        """Register ``worker_id`` or keep it alive: it counts as dead ``ttl`` seconds from
        now unless it beats again. Answers which of the jobs it says it is ``running`` are
        no longer its (cancelled, finished or recovered meanwhile), so it stops them."""

    async def deregister(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly (nothing of it is left to recover)."""

    async def recover(self, batch: int, hooks: Hooks) -> dict[uuid.UUID, str]:
        """Forget the workers past their ``ttl`` and send back up to ``batch`` jobs held
        RUNNING by a worker that is not alive, in one atomic step; answers the new state of
        each. A job never started (prefetched) goes back PENDING, its attempt refunded; a
        started one is RETRYING after its backoff (``chancy.job.backoff_delay``) if it has
        attempts left, else FAILED; either way with a ``chancy.WorkerLost`` error for the
        lost attempt. A job that fails gets the follow-ups of ``hooks`` (a store without
        statements has none to run). Their waiters and workers hear of it."""

    async def prune(self, states: Sequence[str], older_than: float, queues: Sequence[str] | None,
                    batch: int) -> int:
        """Delete up to ``batch`` jobs in finished ``states`` (of ``queues``; None: all)
        that finished more than ``older_than`` seconds ago, oldest first: how many."""

    # --- queue settings ---------------------------------------------------------------------
    async def queue_settings(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        """The settings of the queues ``names`` (None: every queue that has some), by name;
        a pause already over reads as none."""

    def queue_settings_sync(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        """:meth:`queue_settings`, for callers without an event loop."""

    async def change_queue(self, name: str, change: QueueChange) -> None:
        """Apply ``change`` to the queue's settings; every worker hears of it at once. A
        pause stops the claim from starting the queue's jobs; a rate limit caps its starts
        across every worker of the store."""

    def watch_settings(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` on the running event loop whenever a queue's settings change,
        for workers that cannot hear it through the store's own notifications (a store whose
        workers do, through the database, does nothing here); returns the unsubscribe."""

    def change_queue_sync(self, name: str, change: QueueChange) -> None:
        """:meth:`change_queue`, for callers without an event loop."""

    async def delete_queue(self, name: str, purge: bool) -> int:
        """Drop the queue's settings (its workers fall back to the code's); with ``purge``
        delete its waiting jobs too (pending, scheduled, retrying): how many."""

    def delete_queue_sync(self, name: str, purge: bool) -> int:
        """:meth:`delete_queue`, for callers without an event loop."""

    # --- leadership ---------------------------------------------------------------------------
    def leader_lock(self, worker_id: str) -> LeaderLock:
        """A new hold on the leader seat for ``worker_id`` (not yet taken: :meth:`LeaderLock.try_lock`)."""

    async def current_leader(self) -> str | None:
        """The worker id holding the leader seat now, or None."""
