"""Cron schedules in Postgres (:class:`PgSchedules`, the
:class:`~chancy.store.schedules.ScheduleStore` of ``sql/schedules.sql``'s cron table). A
namespace's firing seat is a session of its own holding the namespace's advisory lock, so
the lock ends with its process; exactly once per tick is the firing transaction's doing
(it locks the due rows, pushes their firings and advances each only if no one else did)."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Sequence

from chancy.migrations import Names
from chancy.store.pg.atomic import run_atomically, run_atomically_sync
from chancy.store.pg.jobs import push_steps
from chancy.store.pg.session import Session
from chancy.store.pg.statements import SqlFile, Statement, Steps, single
from chancy.store.schedule_rules import MAX_FIRINGS_PER_PASS, Checked, check_all, firings, loads_job_template
from chancy.store.schedule_rules import replacement_names
from chancy.store.schedules import Schedule, Spec

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore


def _schedules(rows: list[tuple]) -> list[Schedule]:
    return [Schedule(row[0], row[1], loads_job_template(row[2]), *row[3:]) for row in rows]


class _ScheduleSQL:
    """The statements of the schedules of one table prefix, each scoped to a namespace."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._sql = SqlFile("schedules.sql", names.fields())
        #: The database clock (timings are computed from it, never from this host's).
        self.now = Statement(self._sql["now"], {}, lambda rows: rows[0][0])

    def upsert(self, namespace: str, spec: Checked, next_fire_at: datetime) -> Statement:
        """Store a schedule; an unchanged timing keeps its next tick."""
        return Statement(self._sql["upsert"], {
            "namespace": namespace, "name": spec.name, "job": spec.job, **spec.timing,
            "expires_in": spec.expires_in, "next_fire_at": next_fire_at, "enabled": spec.enabled})

    def adopt(self, namespace: str, names: Sequence[str]) -> Statement:
        """Take over the namespace-less rows (stored before namespaces) named ``names``."""
        return Statement(self._sql["adopt"], {"namespace": namespace, "names": list(names)})

    def due(self, namespace: str, batch: int) -> Statement:
        """Up to ``batch`` due schedules, locked for the firing transaction."""
        return Statement(self._sql["due"], {"namespace": namespace, "batch": batch}, _schedules)

    def advance(self, schedule: Schedule, next_: datetime, fired: datetime | None) -> Statement:
        """Move ``schedule`` on to ``next_``, if no one else did since it was read."""
        params = {"namespace": schedule.namespace, "name": schedule.name, "expected": schedule.next_fire_at,
                  "next": next_, "fired": fired}
        return Statement(self._sql["advance"], params)

    def wait(self, namespace: str) -> Statement:
        """Seconds until the namespace's next schedule is due (None: none is enabled)."""
        return Statement(self._sql["wait"], {"namespace": namespace}, lambda rows: rows[0][0])

    def list(self, namespace: str) -> Statement:
        return Statement(self._sql["list"], {"namespace": namespace}, _schedules)

    def delete(self, namespace: str, name: str) -> Statement:
        return Statement(self._sql["delete"], {"namespace": namespace, "name": name})

    def delete_others(self, namespace: str, prefix: str, keep: Sequence[str]) -> Statement:
        """Delete the namespace's schedules named ``prefix…`` except those in ``keep``."""
        return Statement(self._sql["delete_others"], {"namespace": namespace, "prefix": prefix, "keep": list(keep)})

    def try_lead(self, namespace: str) -> Statement:
        """Take the namespace's firing lock on this session if free (True: taken or held)."""
        key = self.names.advisory_key(f"cron:{namespace}")
        return Statement(self._sql["try_lead"], {"key": key}, lambda rows: bool(rows[0][0]))


class PgSchedules:
    """The cron schedules of one app's tables (see the module's docstring)."""

    def __init__(self, store: "PgStore") -> None:
        self._store = store
        self._sql = _ScheduleSQL(store.names)

    # --- each operation, written once as statements -------------------------------------------
    def _upsert_steps(self, namespace: str, specs: Sequence[Spec]) -> Steps:
        checked = check_all(specs)
        if not checked:
            return
        now = yield self._sql.now
        for spec in checked:
            yield self._sql.upsert(namespace, spec, spec.first_tick_after(now))

    def _replace_steps(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> Steps:
        """Run in one transaction."""
        names = replacement_names(prefix, specs)
        yield self._sql.adopt(namespace, names)
        yield from self._upsert_steps(namespace, specs)
        yield self._sql.delete_others(namespace, prefix, names)
        return names

    # --- the store's operations -----------------------------------------------------------------
    async def upsert(self, namespace: str, specs: Sequence[Spec]) -> None:
        await self._store.run(self._upsert_steps(namespace, specs))

    def upsert_sync(self, namespace: str, specs: Sequence[Spec]) -> None:
        self._store.run_sync(self._upsert_steps(namespace, specs))

    async def replace(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]:
        return await run_atomically(self._store, self._replace_steps(namespace, prefix, specs))

    def replace_sync(self, namespace: str, prefix: str, specs: Sequence[Spec]) -> list[str]:
        return run_atomically_sync(self._store, self._replace_steps(namespace, prefix, specs))

    async def delete(self, namespace: str, name: str) -> None:
        await self._store.run(single(self._sql.delete(namespace, name)))

    def delete_sync(self, namespace: str, name: str) -> None:
        self._store.run_sync(single(self._sql.delete(namespace, name)))

    async def list(self, namespace: str) -> list[Schedule]:
        return await self._store.run(single(self._sql.list(namespace)))

    def list_sync(self, namespace: str) -> builtins.list[Schedule]:
        return self._store.run_sync(single(self._sql.list(namespace)))

    async def firing(self, namespace: str) -> "PgFiring":
        return PgFiring(await Session.open(self._store), self._store, self._sql, namespace)


class PgFiring:
    """A namespace's firing seat: a session of its own, leading while it holds the
    namespace's advisory lock (see :class:`~chancy.store.schedules.Firing`)."""

    def __init__(self, session: Session, store: "PgStore", statements: _ScheduleSQL, namespace: str) -> None:
        self._session = session
        self._store = store
        self._sql = statements
        self._namespace = namespace

    async def try_lead(self) -> bool:
        return bool(await self._session.run(single(self._sql.try_lead(self._namespace))))

    async def fire_due(self, catch_up: timedelta) -> int:
        return int(await self._session.run_atomically(self._fire_due_steps(catch_up)))

    def _fire_due_steps(self, catch_up: timedelta) -> Steps:
        """Run in one transaction: the due rows stay locked until it ends."""
        fired = 0
        for schedule in (yield self._sql.due(self._namespace, MAX_FIRINGS_PER_PASS)):
            due = firings(schedule, catch_up)
            yield from push_steps(self._store.jobs, due.jobs)
            yield self._sql.advance(schedule, due.next_fire_at, due.last_tick)
            fired += len(due.jobs)
        return fired

    async def until_next(self) -> float | None:
        seconds: Any = await self._session.run(single(self._sql.wait(self._namespace)))
        return None if seconds is None else float(seconds)

    async def close(self) -> None:
        await self._session.close()  # the lock goes with it
