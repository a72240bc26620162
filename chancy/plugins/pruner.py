"""Retention: finished jobs stay for inspection, then a rule removes them.

Deletes run in bounded batches (one short statement each, ``SKIP LOCKED``) over the
partial index of finished rows, so they never touch, wait for or block the rows the claim
path reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Sequence

from chancy.errors import ConfigurationError
from chancy.job import FINISHED_STATES, JobState
from chancy.plugin import Plugin, WorkerContext
from chancy.store.of_app import cluster_of

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.store.cluster import ClusterStore

log = logging.getLogger("chancy.pruner")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Delete jobs in ``states`` (finished states only) of ``queues`` (None: all) once they
    finished more than ``older_than`` ago."""

    older_than: timedelta
    states: frozenset[JobState] = FINISHED_STATES
    queues: tuple[str, ...] | None = None

    def __init__(self, older_than: timedelta | float, states: Sequence[JobState | str] = tuple(FINISHED_STATES),
                 queues: Sequence[str] | None = None) -> None:
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)
        if age.total_seconds() < 0:
            raise ConfigurationError(f"Rule older_than must not be negative, got {older_than!r}")
        chosen = frozenset(JobState(s) for s in states)
        unfinished = sorted(s.value for s in chosen - FINISHED_STATES)
        if unfinished or not chosen:
            raise ConfigurationError(
                f"A prune rule may only delete finished jobs ({sorted(s.value for s in FINISHED_STATES)}); "
                f"got {unfinished or 'no states'}"
            )
        if isinstance(queues, str):
            raise ConfigurationError("Rule queues must be a list of names, not a string")
        object.__setattr__(self, "older_than", age)
        object.__setattr__(self, "states", chosen)
        object.__setattr__(self, "queues", tuple(queues) if queues is not None else None)


class Pruner(Plugin):
    """Leader-only: every ``interval`` seconds apply each rule, ``batch`` rows per delete.

    ``Pruner()`` keeps finished jobs for a day (Celery's ``result_expires`` default)."""

    leader_only = True

    def __init__(self, rules: Sequence[Rule] = (), interval: float = 60.0, batch: int = 1000) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Pruner interval must be a positive number of seconds, got {interval!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"Pruner batch must be an integer >= 1, got {batch!r}")
        self.rules = tuple(rules) or (Rule(timedelta(days=1)),)
        self.interval = float(interval)
        self.batch = batch

    async def run(self, worker: WorkerContext) -> None:
        while True:
            try:
                deleted = await prune(worker.app, self.rules, self.batch, worker.cluster)
                if deleted:
                    log.info("pruned %d finished job(s)", deleted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("pruning failed (%s); retrying in %.0fs", exc, self.interval)
            await asyncio.sleep(self.interval)


async def prune(app: "Chancy", rules: Sequence[Rule], batch: int = 1000, cluster: "ClusterStore | None" = None) -> int:
    """Apply ``rules`` now, batch by batch until none matches (in ``cluster``: by default
    the store ``app`` keeps its jobs in); returns rows deleted."""
    cluster = cluster if cluster is not None else cluster_of(app)
    total = 0
    for rule in rules:
        states = [s.value for s in rule.states]
        while True:
            deleted = await cluster.prune(states, rule.older_than.total_seconds(), rule.queues, batch)
            total += deleted
            if deleted < batch:
                break
            await asyncio.sleep(0)  # let claims and write-backs interleave between batches
    return total
