"""Cron schedules as the store keeps them: what a caller stores (:class:`Spec`), what it
reads back (:class:`Schedule`), and the contract every store implements
(:class:`ScheduleStore`, with its firing seat :class:`Firing`): Postgres
(:class:`chancy.store.pg.schedules.PgSchedules`) and memory
(:class:`chancy.store.memory_schedules.MemorySchedules`), proven to agree by
``tests/store/test_schedules_contract.py``. The rules both apply (validation, ticks,
firings) are :mod:`chancy.store.schedule_rules`; :mod:`chancy.plugins.cron` is the API."""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime, timedelta
from typing import Protocol, Sequence

from chancy.job import Job


@dataclasses.dataclass(frozen=True)
class Spec:
    """One schedule to store: push ``job`` on ``cron`` (5 fields, or 6 with seconds last) in
    ``timezone``, or ``every`` seconds; each firing expires ``expires_in`` seconds after
    its tick if not started by then."""

    name: str
    job: Job
    cron: str | None = None
    every: float | timedelta | None = None
    timezone: str = "UTC"
    expires_in: float | None = None
    enabled: bool = True


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A stored cron schedule (see :mod:`chancy.plugins.cron`)."""

    namespace: str | None  # the app it belongs to (None: stored before namespaces, no app's yet)
    name: str
    job: Job  # the template each firing is made from
    cron: str | None
    every: float | None
    timezone: str
    expires_in: float | None
    next_fire_at: datetime
    last_fired_at: datetime | None
    enabled: bool
    read_at: datetime  # the store's clock when the schedule was read


class Firing(Protocol):
    """One process's seat for firing a namespace's schedules. At most one seat of a
    namespace leads at a time, and a seat whose process dies stops leading with it. The
    seat is an efficiency measure, not the guarantee: :meth:`fire_due` fires each tick
    exactly once even when several seats fire at the same moment."""

    async def try_lead(self) -> bool:
        """Lead the namespace's firing if no other seat does: True if this one leads now
        (taken now, or held already)."""

    async def fire_due(self, catch_up: timedelta) -> int:
        """Push the firings of the namespace's due, enabled schedules and move each on to
        its next tick, the push and the move of a schedule as one atomic step: each tick is
        pushed once, whoever fires. A firing is the schedule's job with ``unique_key``
        :func:`~chancy.store.schedule_rules.firing_key` and an expiry ``expires_in``
        seconds after its tick. Due ticks at most ``catch_up`` old fire each; when none is
        that recent the missed ones collapse into one firing, for the latest, and the grid
        goes on from it. Returns how many firings were pushed."""

    async def until_next(self) -> float | None:
        """Seconds until the namespace's next enabled schedule is due (negative: overdue;
        None: it has none)."""

    async def close(self) -> None:
        """Give the seat up (another may lead from now on); quietly."""


class ScheduleStore(Protocol):
    """The cron schedules of every namespace (each call names the namespace it reads or
    changes: namespaces never see each other's). Times are the store's clock (the
    database's for Postgres). Every method except :meth:`firing` has a ``*_sync`` twin,
    for callers without an event loop, with the same contract."""

    async def upsert(self, namespace: str, specs: Sequence[Spec]) -> None:
        """Store each spec as the namespace's schedule of that name, created or replaced;
        all are checked (:func:`~chancy.store.schedule_rules.check`, a
        ``ConfigurationError`` otherwise) before any is written. A replaced schedule whose
        timing (cron, every, timezone) is unchanged keeps its next tick (a redeploy neither
        repeats nor skips one); a new timing starts at its first tick after now."""

    def upsert_sync(self, namespace: str, specs: Sequence[Spec]) -> None: ...

    async def replace(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]:
        """Make the namespace's schedules named ``prefix…`` exactly ``specs`` (each named
        so, names unique), atomically: those upserted, the others of the prefix deleted
        (all of them when ``specs`` is empty); schedules outside the prefix untouched.
        A schedule of that name stored before namespaces (no namespace) is taken over,
        next tick included. Returns the names."""

    def replace_sync(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]: ...

    async def delete(self, namespace: str, name: str) -> None:
        """Forget the namespace's schedule ``name`` (nothing if there is none)."""

    def delete_sync(self, namespace: str, name: str) -> None: ...

    async def list(self, namespace: str) -> list[Schedule]:
        """The namespace's schedules, by name."""

    def list_sync(self, namespace: str) -> builtins.list[Schedule]: ...

    async def firing(self, namespace: str) -> Firing:
        """A new seat for firing the namespace's schedules, ready to :meth:`Firing.try_lead`;
        the caller closes it."""
