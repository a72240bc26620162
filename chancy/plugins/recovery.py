"""Recovery: jobs left ``running`` by a worker that stopped heartbeating go back to run
again, and the lost attempt counts.

The attempt was counted when the job was claimed, so a job that keeps killing its worker
runs out of attempts and ends ``failed`` with one ``chancy.WorkerLost`` error per lost
attempt, instead of looping forever. A job that goes back to be retried waits out its
backoff first, as after any failed attempt. A worker that was only cut off (not dead) and
comes back finds its rows taken away: its late write-back changes nothing (it is guarded
by ``taken_by``) and its next heartbeat stops those jobs locally.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from chancy.errors import ConfigurationError
from chancy.plugin import Plugin, WorkerContext
from chancy.store.of_app import cluster_of

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.store.cluster import ClusterStore

log = logging.getLogger("chancy.recovery")


class Recovery(Plugin):
    """Leader-only: every ``interval`` seconds, forget expired workers and recover their jobs
    (``batch`` per statement, repeated while batches come back full)."""

    leader_only = True

    def __init__(self, interval: float = 5.0, batch: int = 1000) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Recovery interval must be a positive number of seconds, got {interval!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"Recovery batch must be an integer >= 1, got {batch!r}")
        self.interval = float(interval)
        self.batch = batch

    async def run(self, worker: WorkerContext) -> None:
        while True:
            # Wait first: a leader elected after an outage gives the other workers one
            # interval to heartbeat again before it judges them dead.
            await asyncio.sleep(self.interval)
            try:
                await recover(worker.app, self.batch, worker.cluster)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("recovery failed (%s); retrying in %.1fs", exc, self.interval)


async def recover(app: "Chancy", batch: int = 1000, cluster: "ClusterStore | None" = None) -> int:
    """Recover every job held by an expired worker now (of ``cluster``: by default the
    store ``app`` keeps its jobs in); returns how many went back."""
    cluster = cluster if cluster is not None else cluster_of(app)
    total = 0
    while True:
        recovered = await cluster.recover(batch, app.hooks)
        for job_id, state in recovered.items():
            log.warning("job %s was running on a worker that stopped heartbeating; now %s", job_id, state)
        total += len(recovered)
        if len(recovered) < batch:
            return total
