"""Leadership: at most one worker at a time runs the leader-only plugins (recovery,
pruning, cron).

Mechanism: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection
dedicated to it. Postgres grants such a lock to one session at a time, so two leaders
cannot exist in the database's view, and it releases the lock the moment that session
ends — a ``kill -9`` closes the socket — so a successor takes over within one ``interval``.
A leader's host that vanishes from the network leaves a session the server believes in
until TCP keepalives give up (raised for this session below); its would-be successors end
that session themselves once the leader's worker is past its ``liveness_timeout``, the rule
by which recovery already counts it dead. Unlike a lease row, this needs no clock
comparisons and no writes while leading. It does need a real session: point workers at
Postgres directly (or a session-mode pool), not through a transaction-pooling PgBouncer.

What it cannot do alone is stop a leader whose link silently died from *believing* it
still leads; so the leader probes its connection every ``interval`` and steps down when
the probe fails or takes longer than ``interval``. Leader-only work is written to be safe
even if two workers did it at once for that moment (every statement is guarded by the row
state it expects), so leadership is an efficiency guarantee, never a correctness one.
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

log = logging.getLogger("chancy.leadership")


class Leadership(Plugin):
    """Runs on every worker; the one that holds the lock calls ``worker.set_leader(True)``."""

    def __init__(self, interval: float = 2.0) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Leadership interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)

    async def run(self, worker: WorkerContext) -> None:
        while True:
            lock = worker.cluster.leader_lock(worker.worker_id)
            try:
                await lock.open()
                while not await lock.try_lock():
                    # A leader's host that drops off the network keeps its session open in
                    # the server's view until TCP keepalives give up on it (25 s here;
                    # through a session pooler, the pooler's own keepalives: hours), and
                    # the lock with it. But its worker stopped heartbeating, and once past
                    # its liveness_timeout it is dead to recovery: its jobs are being handed
                    # to others. Ending its leadership session then is the same judgement,
                    # applied to the lock, so a successor takes over within
                    # liveness_timeout plus one interval. A leader deposed wrongly (alive,
                    # but unable to heartbeat for that long) probes a dead connection and
                    # steps down, as after any lost link.
                    if await lock.depose_dead_leader():
                        log.warning("ended the leadership session of a worker past its liveness timeout")
                    await asyncio.sleep(self.interval)
                log.info("worker %s is now the leader", worker.worker_id)
                worker.set_leader(True)
                while True:
                    await asyncio.sleep(self.interval)
                    await lock.probe(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost connection means a lost lock
                if worker.is_leader:
                    log.warning("worker %s lost leadership (%s)", worker.worker_id, exc)
                else:
                    log.debug("leadership connection failed (%s)", exc)
            finally:
                worker.set_leader(False)
                await lock.close()
            await asyncio.sleep(self.interval)


async def current_leader(app: "Chancy") -> str | None:
    """The worker id of the current leader (as seen by the database), or None.

    Reads who holds the advisory lock: the truth, not a cached claim. (Postgres keeps 63
    bytes of a session name, so a very long worker id comes back cut.)"""
    return await cluster_of(app).current_leader()
