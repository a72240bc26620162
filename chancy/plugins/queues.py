"""Queue administration at runtime: pause (optionally until a time), resume, change the
per-worker concurrency, set a global rate limit, declare and delete — without restarting
workers.

Settings live in the ``<prefix>queues`` table. Each change NOTIFYs the workers, which
re-read the table at once (and every ``settings_interval`` seconds in case a notification
was missed). Pause and rate limit are enforced by the claim statement itself, on the
database clock, so they hold across every worker at the instant they are committed; a
concurrency change applies to each worker's next claim.

Usage::

    admin = QueueAdmin(app)
    await admin.pause("emails", until=timedelta(minutes=5))
    await admin.set_rate_limit("emails", 100, per=60)   # 100 starts per minute, cluster-wide
    admin.resume_sync("emails")                        # every method has a *_sync twin
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from chancy.errors import ConfigurationError
from chancy.store.cluster import FOREVER, ClusterStore, QueueChange, QueueSettings
from chancy.store.of_app import cluster_of

if TYPE_CHECKING:
    from chancy.app import Chancy

__all__ = ["QueueAdmin", "QueueSettings"]

Until = datetime | timedelta | float | int | None


class QueueAdmin:
    """Runtime settings of an app's queues (see the module docstring), in the store the app
    keeps its jobs in (Postgres, or memory inside :func:`chancy.testing.in_memory`)."""

    def __init__(self, app: "Chancy") -> None:
        self.app = app

    @property
    def _cluster(self) -> ClusterStore:
        return cluster_of(self.app)

    # --- changes (validated once, shared by the async and sync forms) ------------------------
    @staticmethod
    def _declare(concurrency: int | None, rate_limit: tuple[int, float] | None) -> QueueChange:
        return QueueChange(concurrency=_concurrency(concurrency), set_concurrency=True,
                           rate=_rate(rate_limit), set_rate=True)

    @staticmethod
    def _pause(until: Until) -> QueueChange:
        return QueueChange(pause=_pause_until(until), set_pause=True)

    @staticmethod
    def _set_concurrency(concurrency: int | None) -> QueueChange:
        return QueueChange(concurrency=_concurrency(concurrency), set_concurrency=True)

    @staticmethod
    def _set_rate_limit(limit: int | None, per: float | timedelta) -> QueueChange:
        rate = None if limit is None else (limit, per.total_seconds() if isinstance(per, timedelta) else per)
        return QueueChange(rate=_rate(rate), set_rate=True)

    # --- async --------------------------------------------------------------------------------
    async def declare(self, name: str, *, concurrency: int | None = None,
                      rate_limit: tuple[int, float] | None = None) -> None:
        """Create or overwrite a queue's settings (not its pause state): ``concurrency``
        caps each worker's slots for it; ``rate_limit=(n, seconds)`` caps starts
        cluster-wide. ``None`` means the code's setting / no rate limit."""
        await self._cluster.change_queue(_name(name), self._declare(concurrency, rate_limit))

    async def pause(self, name: str, until: Until = None) -> None:
        """Stop starting the queue's jobs (running ones finish) until resumed, or until
        ``until`` (a time, a timedelta or seconds from now on the database clock)."""
        await self._cluster.change_queue(_name(name), self._pause(until))

    async def resume(self, name: str) -> None:
        await self._cluster.change_queue(_name(name), RESUME)

    async def set_concurrency(self, name: str, concurrency: int | None) -> None:
        """Cap each worker's concurrent jobs of this queue (``None``: back to the code's).
        A worker never exceeds the size its executor was started with."""
        await self._cluster.change_queue(_name(name), self._set_concurrency(concurrency))

    async def set_rate_limit(self, name: str, limit: int | None, per: float | timedelta = 1.0) -> None:
        """At most ``limit`` job starts in any ``per`` seconds, across all workers
        (``None``: no limit)."""
        await self._cluster.change_queue(_name(name), self._set_rate_limit(limit, per))

    async def delete(self, name: str, *, purge: bool = False) -> int:
        """Drop the queue's runtime settings (workers fall back to the code's); with
        ``purge`` also delete its waiting jobs. Returns how many jobs were deleted."""
        return await self._cluster.delete_queue(_name(name), purge)

    async def list(self) -> list[QueueSettings]:
        """Every queue with runtime settings (``paused_until`` is None unless paused now)."""
        return await self._cluster.queue_settings()

    async def get(self, name: str) -> QueueSettings | None:
        rows = await self._cluster.queue_settings([_name(name)])
        return rows[0] if rows else None

    # --- sync twins ------------------------------------------------------------------------------
    def declare_sync(self, name: str, *, concurrency: int | None = None,
                     rate_limit: tuple[int, float] | None = None) -> None:
        self._cluster.change_queue_sync(_name(name), self._declare(concurrency, rate_limit))

    def pause_sync(self, name: str, until: Until = None) -> None:
        self._cluster.change_queue_sync(_name(name), self._pause(until))

    def resume_sync(self, name: str) -> None:
        self._cluster.change_queue_sync(_name(name), RESUME)

    def set_concurrency_sync(self, name: str, concurrency: int | None) -> None:
        self._cluster.change_queue_sync(_name(name), self._set_concurrency(concurrency))

    def set_rate_limit_sync(self, name: str, limit: int | None, per: float | timedelta = 1.0) -> None:
        self._cluster.change_queue_sync(_name(name), self._set_rate_limit(limit, per))

    def delete_sync(self, name: str, *, purge: bool = False) -> int:
        return self._cluster.delete_queue_sync(_name(name), purge)

    def list_sync(self) -> builtins.list[QueueSettings]:  # list: the method above
        return self._cluster.queue_settings_sync()

    def get_sync(self, name: str) -> QueueSettings | None:
        rows = self._cluster.queue_settings_sync([_name(name)])
        return rows[0] if rows else None


#: The change that resumes a paused queue.
RESUME = QueueChange(pause=None, set_pause=True)


# --- validation ---------------------------------------------------------------------------------
def _name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigurationError(f"Queue name must be a non-empty string of at most 200 characters, got {name!r}")
    return name


def _concurrency(concurrency: int | None) -> int | None:
    if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                    or concurrency < 1):
        raise ConfigurationError(f"concurrency must be an integer >= 1 (or None), got {concurrency!r}")
    return concurrency


def _rate(rate: tuple[int, float] | None) -> tuple[int, float] | None:
    if rate is None:
        return None
    try:
        limit, per = rate
    except (TypeError, ValueError):
        raise ConfigurationError(f"rate_limit must be (jobs, seconds), got {rate!r}") from None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(f"rate limit must be an integer >= 1 jobs, got {limit!r}")
    if not isinstance(per, (int, float)) or isinstance(per, bool) or not 0 < per < float("inf"):
        raise ConfigurationError(f"rate limit period must be a positive number of seconds, got {per!r}")
    return limit, float(per)


def _pause_until(until: Until) -> datetime | float:
    """An end time, seconds from now, or ``inf`` (until resumed)."""
    if until is None:
        return FOREVER
    if isinstance(until, datetime):
        if until.tzinfo is None:
            raise ConfigurationError(f"pause until must be a timezone-aware datetime, got {until!r}")
        return until
    seconds = until.total_seconds() if isinstance(until, timedelta) else until
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise ConfigurationError(
            f"pause until must be a datetime, a positive timedelta or seconds, or None (until resumed); got {until!r}")
    return float(seconds)
