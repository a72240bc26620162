"""Plugins: optional, isolated pieces of cluster work (leadership, recovery, pruning,
cron…) that a worker runs next to its queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.worker import Worker


class Plugin:
    """Subclass and implement :meth:`run`. A plugin with ``leader_only = True`` runs only
    on the worker that currently holds leadership, and is stopped when it loses it."""

    leader_only: bool = False

    def __init__(self) -> None:
        self.app: "Chancy | None" = None

    def bind(self, app: "Chancy") -> None:
        self.app = app

    async def run(self, worker: "Worker") -> Any:
        """Do the plugin's work until cancelled (the worker cancels it at shutdown)."""
        raise NotImplementedError
