"""The cluster's side of the Postgres store (:class:`chancy.store.cluster.ClusterStore`):
heartbeats and recovery, pruning, queue settings and the leader lock, run through the
app's :class:`~chancy.store.pg.store.PgStore` with the statements of ``sql/cluster.sql``,
``sql/worker.sql``, ``sql/queue_settings.sql`` and ``sql/leadership.sql``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

from chancy.job import JobState
from chancy.queue import Transition
from chancy.store.cluster import QueueChange, QueueSettings
from chancy.store.pg.atomic import run_atomically
from chancy.store.pg.leadership import LeadershipLock
from chancy.store.pg.schedules import PgSchedules
from chancy.store.pg.statements import Statement, Steps, single

if TYPE_CHECKING:
    from chancy.hooks import Hooks
    from chancy.store.pg.store import PgStore


class PgCluster:
    """The cluster facet of one :class:`PgStore` (``app.store.cluster``)."""

    def __init__(self, store: "PgStore") -> None:
        self._store = store
        self.schedules = PgSchedules(store)

    async def _run(self, statement: Statement) -> Any:
        return await self._store.run(single(statement))

    # --- liveness and recovery ---------------------------------------------------------
    async def heartbeat(self, worker_id: str, *, hostname: str, pid: int, queues: Sequence[str],
                        tags: Sequence[str], running: Sequence[uuid.UUID], ttl: float) -> list[uuid.UUID]:
        return list(await self._run(self._store.worker.heartbeat(
            worker_id, hostname, pid, list(queues), list(tags), list(running), ttl)))

    async def deregister(self, worker_id: str) -> None:
        await self._run(self._store.worker.deregister(worker_id))

    async def recover(self, batch: int, hooks: "Hooks") -> dict[uuid.UUID, str]:
        return await run_atomically(self._store, self._recover_steps(batch, hooks))

    def _recover_steps(self, batch: int, hooks: "Hooks") -> Steps:
        """One recovery batch: the statement sends the jobs back; those retried get their
        backoff and those failed their hooks' follow-ups (e.g. the rest of a workflow), as
        a worker's write-back would, in the same transaction."""
        store = self._store
        recovered = yield store.cluster_sql.recover(batch)
        retrying = [job_id for job_id, state in recovered.items() if state == JobState.RETRYING.value]
        failed = [job_id for job_id, state in recovered.items() if state == JobState.FAILED.value]
        if not failed or not hooks.completion:
            failed = []
        if retrying or failed:
            records = yield store.jobs.get_many(retrying + failed)
            delays = {record.id: record.retry_delay() for record in records if record.state is JobState.RETRYING}
            if delays:
                yield store.worker.delay_retries(delays)
            for record in records:
                if record.state is JobState.FAILED:
                    transition = Transition(record.id, JobState.FAILED, error=record.errors[-1])
                    follow_up = hooks.with_follow_ups(record, transition).follow_up
                    if follow_up is not None:
                        yield from follow_up()
        return recovered

    async def prune(self, states: Sequence[str], older_than: float, queues: Sequence[str] | None,
                    batch: int) -> int:
        return await self._run(self._store.cluster_sql.prune(states, older_than, queues, batch))

    # --- queue settings -------------------------------------------------------------------
    def _upsert(self, name: str, change: QueueChange) -> Statement:
        return self._store.cluster_sql.queue_upsert(
            name, concurrency=change.concurrency, set_concurrency=change.set_concurrency,
            pause=change.pause, set_pause=change.set_pause, rate=change.rate, set_rate=change.set_rate)

    async def queue_settings(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        return await self._run(self._store.cluster_sql.queue_list(names))

    def queue_settings_sync(self, names: Sequence[str] | None = None) -> list[QueueSettings]:
        return self._store.run_sync(single(self._store.cluster_sql.queue_list(names)))

    async def change_queue(self, name: str, change: QueueChange) -> None:
        await self._run(self._upsert(name, change))

    def watch_settings(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Nothing to do: workers hear of changes through their LISTEN connection."""
        return lambda: None

    def change_queue_sync(self, name: str, change: QueueChange) -> None:
        self._store.run_sync(single(self._upsert(name, change)))

    async def delete_queue(self, name: str, purge: bool) -> int:
        return (await self._run(self._store.cluster_sql.queue_delete(name, purge)))[1]

    def delete_queue_sync(self, name: str, purge: bool) -> int:
        return self._store.run_sync(single(self._store.cluster_sql.queue_delete(name, purge)))[1]

    # --- leadership ---------------------------------------------------------------------------
    def leader_lock(self, worker_id: str) -> LeadershipLock:
        return LeadershipLock(self._store, worker_id)

    async def current_leader(self) -> str | None:
        return await self._run(self._store.leadership.current_leader())
