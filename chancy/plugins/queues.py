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
from typing import TYPE_CHECKING, Any

from chancy.errors import ConfigurationError
from chancy.store.pg.cluster import QueueSettings
from chancy.store.pg.statements import single, Statement

if TYPE_CHECKING:
    from chancy.app import Chancy

__all__ = ["QueueAdmin", "QueueSettings"]

Until = datetime | timedelta | float | int | None


class QueueAdmin:
    """Runtime settings of an app's Postgres queues (see the module docstring)."""

    def __init__(self, app: "Chancy") -> None:
        self.app = app
        self._sql = app.store.cluster

    # --- statements (validated once, shared by the async and sync forms) ---------------------
    def _declare(self, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None) -> Statement:
        return self._sql.queue_upsert(
            _name(name), concurrency=_concurrency(concurrency), set_concurrency=True,
            rate=_rate(rate_limit), set_rate=True,
        )

    def _pause(self, name: str, until: Until) -> Statement:
        return self._sql.queue_upsert(_name(name), pause=_pause_until(until), set_pause=True)

    def _resume(self, name: str) -> Statement:
        return self._sql.queue_upsert(_name(name), pause=None, set_pause=True)

    def _set_concurrency(self, name: str, concurrency: int | None) -> Statement:
        return self._sql.queue_upsert(_name(name), concurrency=_concurrency(concurrency), set_concurrency=True)

    def _set_rate_limit(self, name: str, limit: int | None, per: float | timedelta) -> Statement:
        rate = None if limit is None else (limit, per.total_seconds() if isinstance(per, timedelta) else per)
        return self._sql.queue_upsert(_name(name), rate=_rate(rate), set_rate=True)

    # --- async --------------------------------------------------------------------------------
    async def _run(self, statement: Statement) -> Any:
        return await self.app.store.run(single(statement))

    async def declare(self, name: str, *, concurrency: int | None = None,
                      rate_limit: tuple[int, float] | None = None) -> None:
        """Create or overwrite a queue's settings (not its pause state): ``concurrency``
        caps each worker's slots for it; ``rate_limit=(n, seconds)`` caps starts
        cluster-wide. ``None`` means the code's setting / no rate limit."""
        await self._run(self._declare(name, concurrency, rate_limit))

    async def pause(self, name: str, until: Until = None) -> None:
        """Stop starting the queue's jobs (running ones finish) until resumed, or until
        ``until`` (a time, a timedelta or seconds from now on the database clock)."""
        await self._run(self._pause(name, until))

    async def resume(self, name: str) -> None:
        await self._run(self._resume(name))

    async def set_concurrency(self, name: str, concurrency: int | None) -> None:
        """Cap each worker's concurrent jobs of this queue (``None``: back to the code's).
        A worker never exceeds the size its executor was started with."""
        await self._run(self._set_concurrency(name, concurrency))

    async def set_rate_limit(self, name: str, limit: int | None, per: float | timedelta = 1.0) -> None:
        """At most ``limit`` job starts in any ``per`` seconds, across all workers
        (``None``: no limit)."""
        await self._run(self._set_rate_limit(name, limit, per))

    async def delete(self, name: str, *, purge: bool = False) -> int:
        """Drop the queue's runtime settings (workers fall back to the code's); with
        ``purge`` also delete its waiting jobs. Returns how many jobs were deleted."""
        return (await self._run(self._sql.queue_delete(_name(name), purge)))[1]

    async def list(self) -> list[QueueSettings]:
        """Every queue with runtime settings (``paused_until`` is None unless paused now)."""
        return await self._run(self._sql.queue_list())

    async def get(self, name: str) -> QueueSettings | None:
        rows = await self._run(self._sql.queue_list([_name(name)]))
        return rows[0] if rows else None

    # --- sync twins ------------------------------------------------------------------------------
    def _run_sync(self, statement: Statement) -> Any:
        return self.app.store.run_sync(single(statement))

    def declare_sync(self, name: str, *, concurrency: int | None = None,
                     rate_limit: tuple[int, float] | None = None) -> None:
        self._run_sync(self._declare(name, concurrency, rate_limit))

    def pause_sync(self, name: str, until: Until = None) -> None:
        self._run_sync(self._pause(name, until))

    def resume_sync(self, name: str) -> None:
        self._run_sync(self._resume(name))

    def set_concurrency_sync(self, name: str, concurrency: int | None) -> None:
        self._run_sync(self._set_concurrency(name, concurrency))

    def set_rate_limit_sync(self, name: str, limit: int | None, per: float | timedelta = 1.0) -> None:
        self._run_sync(self._set_rate_limit(name, limit, per))

    def delete_sync(self, name: str, *, purge: bool = False) -> int:
        return self._run_sync(self._sql.queue_delete(_name(name), purge))[1]

    def list_sync(self) -> builtins.list[QueueSettings]:  # list: the method above
        return self._run_sync(self._sql.queue_list())

    def get_sync(self, name: str) -> QueueSettings | None:
        rows = self._run_sync(self._sql.queue_list([_name(name)]))
        return rows[0] if rows else None


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
        return float("inf")
    if isinstance(until, datetime):
        if until.tzinfo is None:
            raise ConfigurationError(f"pause until must be a timezone-aware datetime, got {until!r}")
        return until
    seconds = until.total_seconds() if isinstance(until, timedelta) else until
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise ConfigurationError(
            f"pause until must be a datetime, a positive timedelta or seconds, or None (until resumed); got {until!r}")
    return float(seconds)
