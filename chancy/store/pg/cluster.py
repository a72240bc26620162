"""The cluster's shared statements (``sql/cluster.sql``, ``sql/queue_settings.sql``):
recovery of jobs lost with their worker, pruning of finished jobs, and the runtime
settings of queues that every worker reads."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from psycopg import sql

from chancy.migrations import Names
from chancy.store.cluster import QueueSettings
from chancy.store.pg.statements import SqlFile, Statement


class ClusterSQL:
    """The cluster statements for one table prefix, composed once."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.queues_channel = names.channel("queues")
        channels = {
            "pushed_channel": sql.Literal(names.channel("pushed")),
            "done_channel": sql.Literal(names.channel("done")),
            "queues_channel": sql.Literal(self.queues_channel),
        }
        self._chores = SqlFile("cluster.sql", {**names.fields(), **channels})
        self._settings = SqlFile("queue_settings.sql", {**names.fields(), **channels})

    # --- recovery and pruning -------------------------------------------------------------
    def recover(self, batch: int) -> Statement:
        """Forget expired workers and send back up to ``batch`` jobs they held: ``{id: state}``."""
        return Statement(self._chores["recover"], {"batch": batch}, lambda rows: {r[0]: r[1] for r in rows})

    def prune(self, states: Sequence[str], age: float, queues: Sequence[str] | None, batch: int) -> Statement:
        """Delete up to ``batch`` jobs finished in ``states`` over ``age`` seconds ago: how many."""
        params = {"states": list(states), "age": float(age), "queues": list(queues) if queues else None,
                  "batch": batch}
        return Statement(self._chores["prune"], params, len)

    # --- queue settings ------------------------------------------------------------------------
    def queue_upsert(
        self, name: str, *, concurrency: int | None = None, set_concurrency: bool = False,
        pause: datetime | float | None = None, set_pause: bool = False,
        rate: tuple[int, float] | None = None, set_rate: bool = False,
    ) -> Statement:
        """Create the queue's row or change the settings flagged ``set_*`` (others keep).
        ``pause`` is an end time, seconds from now (database clock), or ``inf``."""
        forever = isinstance(pause, float) and pause == float("inf")
        params = {
            "name": name, "concurrency": concurrency, "set_concurrency": set_concurrency,
            "pause_forever": forever, "set_pause": set_pause,
            "paused_until": pause if isinstance(pause, datetime) else None,
            "pause_for": pause if isinstance(pause, float) and not forever else None,
            "rate_limit": rate[0] if rate else None, "rate_period": rate[1] if rate else None,
            "set_rate": set_rate,
        }
        return Statement(self._settings["upsert"], params)

    def queue_delete(self, name: str, purge: bool) -> Statement:
        """Remove the queue's settings (and with ``purge`` its waiting jobs): ``(existed, purged)``."""
        return Statement(self._settings["delete"], {"name": name, "purge": purge},
                         lambda rows: (bool(rows[0][0]), rows[0][1]))

    def queue_list(self, names: Sequence[str] | None = None) -> Statement:
        return Statement(self._settings["list"], {"names": list(names) if names is not None else None},
                         lambda rows: [QueueSettings(*row) for row in rows])
