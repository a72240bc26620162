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
from chancy.job import JobState
from chancy.queue import Transition
from chancy.store.pg.statements import Steps
from chancy.store.pg.atomic import run_atomically

if TYPE_CHECKING:
    from chancy.app import Chancy

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
                await recover(worker.app, self.batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("recovery failed (%s); retrying in %.1fs", exc, self.interval)


def recover_steps(app: "Chancy", batch: int) -> Steps:
    """One recovery batch. Jobs that go back to be retried wait out their backoff; jobs it
    fails for good get their completion hooks' follow-ups (e.g. the rest of a workflow), as
    a worker's write-back would give them."""
    recovered = yield app.store.cluster.recover(batch)
    retrying = [job_id for job_id, state in recovered.items() if state == JobState.RETRYING.value]
    failed = [job_id for job_id, state in recovered.items() if state == JobState.FAILED.value]
    if not failed or not app.hooks.completion:
        failed = []
    if retrying or failed:
        records = yield app.store.jobs.get_many(retrying + failed)
        delays = {record.id: record.retry_delay() for record in records if record.state is JobState.RETRYING}
        if delays:
            yield app.store.worker.delay_retries(delays)
        for record in records:
            if record.state is JobState.FAILED:
                transition = Transition(record.id, JobState.FAILED, error=record.errors[-1])
                follow_up = app.hooks.with_follow_ups(record, transition).follow_up
                if follow_up is not None:
                    yield from follow_up()
    return recovered


async def recover(app: "Chancy", batch: int = 1000) -> int:
    """Recover every job held by an expired worker now; returns how many went back."""
    total = 0
    while True:
        recovered = await run_atomically(app.store, recover_steps(app, batch))
        for job_id, state in recovered.items():
            log.warning("job %s was running on a worker that stopped heartbeating; now %s", job_id, state)
        total += len(recovered)
        if len(recovered) < batch:
            return total
