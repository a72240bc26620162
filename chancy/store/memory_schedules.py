"""Cron schedules kept in this process (:class:`MemorySchedules`), for an app whose queues
are in memory (:func:`chancy.testing.in_memory`): a test of a beat schedule stores, lists
and fires it without Postgres, each firing pushed into the app's in-memory queues. The
rules are the Postgres store's own (:mod:`chancy.store.schedule_rules`); what its SQL
keeps (``sql/schedules.sql``) is kept here once, under one lock, and the contract suite
(``tests/store/test_schedules_contract.py``) proves the two agree."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Sequence

from chancy.store.schedule_rules import MAX_FIRINGS_PER_PASS, Timing, check_all, firings, loads_job_template
from chancy.store.schedule_rules import replacement_names
from chancy.store.schedules import Schedule, Spec

if TYPE_CHECKING:
    from chancy.app import Chancy


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclasses.dataclass(frozen=True)
class _Row:
    """A stored schedule (the cron table's row): the template as its JSON, as Postgres
    keeps it, so a read gives a fresh job made the same way."""

    namespace: str
    name: str
    job: str
    timing: Timing
    expires_in: float | None
    next_fire_at: datetime
    last_fired_at: datetime | None
    enabled: bool

    def read(self, now: datetime) -> Schedule:
        return Schedule(self.namespace, self.name, loads_job_template(self.job), self.timing["cron"],
                        self.timing["every"], self.timing["timezone"], self.expires_in, self.next_fire_at,
                        self.last_fired_at, self.enabled, now)


class MemorySchedules:
    """The cron schedules of one app's in-memory store: they live in this object (keep one
    per app while its queues are in memory). Firings are pushed through ``app.queue``.
    Schedules stored before namespaces exist in Postgres only: nothing is adopted here."""

    def __init__(self, app: "Chancy") -> None:
        self._app = app
        #: Held by every read and change: a change, or a firing pass, is one atomic step.
        self._lock = threading.RLock()
        self._rows: dict[tuple[str, str], _Row] = {}
        self._leaders: dict[str, MemoryFiring] = {}

    # --- storing ------------------------------------------------------------------------------
    def upsert_sync(self, namespace: str, specs: Sequence[Spec]) -> None:
        checked = check_all(specs)
        with self._lock:
            now = _now()
            for spec in checked:
                old = self._rows.get((namespace, spec.name))
                kept = old is not None and old.timing == spec.timing
                self._rows[(namespace, spec.name)] = _Row(
                    namespace, spec.name, spec.job, spec.timing, spec.expires_in,
                    old.next_fire_at if old is not None and kept else spec.first_tick_after(now),
                    old.last_fired_at if old is not None else None, spec.enabled)

    async def upsert(self, namespace: str, specs: Sequence[Spec]) -> None:
        self.upsert_sync(namespace, specs)

    def replace_sync(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]:
        names = replacement_names(prefix, specs)
        with self._lock:
            self.upsert_sync(namespace, specs)
            for key in [(ns, name) for ns, name in self._rows
                        if ns == namespace and name.startswith(prefix) and name not in names]:
                del self._rows[key]
        return names

    async def replace(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]:
        return self.replace_sync(namespace, prefix, specs)

    def delete_sync(self, namespace: str, name: str) -> None:
        with self._lock:
            self._rows.pop((namespace, name), None)

    async def delete(self, namespace: str, name: str) -> None:
        self.delete_sync(namespace, name)

    def list_sync(self, namespace: str) -> list[Schedule]:
        with self._lock:
            now = _now()
            return [row.read(now) for (ns, _), row in sorted(self._rows.items()) if ns == namespace]

    async def list(self, namespace: str) -> list[Schedule]:
        return self.list_sync(namespace)

    async def firing(self, namespace: str) -> "MemoryFiring":
        return MemoryFiring(self, namespace)

    # --- firing ------------------------------------------------------------------------------------
    def _lead(self, seat: "MemoryFiring") -> bool:
        with self._lock:
            return self._leaders.setdefault(seat.namespace, seat) is seat

    def _step_down(self, seat: "MemoryFiring") -> None:
        with self._lock:
            if self._leaders.get(seat.namespace) is seat:
                del self._leaders[seat.namespace]

    def _fire_due(self, namespace: str, catch_up: timedelta) -> int:
        """Under the lock, as the Postgres firing transaction: each due schedule's firings
        pushed (all or none: one push) and the schedule advanced, so no tick fires twice."""
        fired = 0
        with self._lock:
            now = _now()
            due = sorted((row for (ns, _), row in self._rows.items()
                          if ns == namespace and row.enabled and row.next_fire_at <= now),
                         key=lambda row: row.next_fire_at)[:MAX_FIRINGS_PER_PASS]
            for row in due:
                schedule = row.read(now)
                plan = firings(schedule, catch_up)
                self._app.queue(schedule.job.queue).push_sync(plan.jobs)
                self._rows[(namespace, row.name)] = dataclasses.replace(
                    row, next_fire_at=plan.next_fire_at, last_fired_at=plan.last_tick)
                fired += len(plan.jobs)
        return fired

    def _until_next(self, namespace: str) -> float | None:
        with self._lock:
            ticks = [row.next_fire_at for (ns, _), row in self._rows.items() if ns == namespace and row.enabled]
            return (min(ticks) - _now()).total_seconds() if ticks else None


class MemoryFiring:
    """A namespace's firing seat in this process: it leads until it closes (see
    :class:`~chancy.store.schedules.Firing`)."""

    def __init__(self, schedules: MemorySchedules, namespace: str) -> None:
        self._schedules = schedules
        self.namespace = namespace

    async def try_lead(self) -> bool:
        return self._schedules._lead(self)

    async def fire_due(self, catch_up: timedelta) -> int:
        return self._schedules._fire_due(self.namespace, catch_up)

    async def until_next(self) -> float | None:
        return self._schedules._until_next(self.namespace)

    async def close(self) -> None:
        self._schedules._step_down(self)
