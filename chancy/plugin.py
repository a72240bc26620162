"""Plugins: optional, isolated pieces of cluster work (leadership, recovery, pruning,
cron…) that a worker runs next to its queues."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.store.cluster import ClusterStore


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """What a plugin sees of the worker running it: its app, its id, the cluster state of
    the store its queues live in (:class:`~chancy.store.cluster.ClusterStore`), and its
    seat of leader (taken and given up by :class:`~chancy.plugins.leadership.Leadership`)."""

    app: "Chancy"
    worker_id: str
    cluster: "ClusterStore"
    _is_leader: Callable[[], bool] = dataclasses.field(repr=False)
    _set_leader: Callable[[bool], None] = dataclasses.field(repr=False)

    @property
    def is_leader(self) -> bool:
        return self._is_leader()

    def set_leader(self, is_leader: bool) -> None:
        """Start (True) or stop (False) the worker's leader-only plugins."""
        self._set_leader(is_leader)


class Plugin:
    """Subclass and implement :meth:`run`. A plugin with ``leader_only = True`` runs only
    on the worker that currently holds leadership, and is stopped when it loses it."""

    leader_only: bool = False

    def __init__(self) -> None:
        self.app: "Chancy | None" = None

    def bind(self, app: "Chancy") -> None:
        self.app = app

    async def run(self, worker: WorkerContext) -> Any:
        """Do the plugin's work until cancelled (the worker cancels it at shutdown)."""
        raise NotImplementedError
