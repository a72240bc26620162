"""Leadership as stored (``sql/leadership.sql``): the leader lock's dedicated session and
who holds it. When to try, when to depose and when to step down is the plugin's policy
(:mod:`chancy.plugins.leadership`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

from chancy.migrations import Names
from chancy.store.pg.session import Session
from chancy.store.pg.statements import SqlFile, Statement, single

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore

log = logging.getLogger("chancy.leadership")

#: A leader's session is named this plus its worker id (cut to Postgres' 63 bytes).
APPLICATION_NAME_PREFIX = "chancy-leader:"


class LeadershipSQL:
    """The leadership statements for one table prefix."""

    def __init__(self, names: Names) -> None:
        self._sql = SqlFile("leadership.sql", names.fields())
        self.key = names.advisory_key("leader")
        # As pg_locks shows a bigint advisory key.
        self._holder = {"key_high": self.key >> 32, "key_low": self.key & 0xFFFFFFFF}

    def name_session(self, worker_id: str) -> Statement:
        name = (APPLICATION_NAME_PREFIX + worker_id)[:63]
        return Statement(self._sql["name_session"], {"application_name": name})

    def try_lock(self) -> Statement:
        """Take the leader lock on this session if free (True: taken or held already)."""
        return Statement(self._sql["try_lock"], {"key": self.key}, lambda rows: bool(rows and rows[0][0]))

    def depose_dead_leader(self) -> Statement:
        """End the holder's session if its worker is past its liveness timeout: whether one was ended."""
        return Statement(self._sql["depose_dead_leader"], {**self._holder, "prefix": APPLICATION_NAME_PREFIX},
                         lambda rows: any(row[0] for row in rows))

    def current_leader(self) -> Statement:
        """The worker id of the lock's holder, or None. (Postgres keeps 63 bytes of a
        session name, so a very long worker id comes back cut.)"""
        return Statement(self._sql["current_leader"], dict(self._holder), _leader)


def _leader(rows: list[tuple]) -> str | None:
    if not rows:
        return None
    name: str = rows[0][0]
    return name[len(APPLICATION_NAME_PREFIX):] if name.startswith(APPLICATION_NAME_PREFIX) else name


class LeadershipLock:
    """A worker's session for the leader lock: opened and named after the worker, it tries
    the lock, may end a dead holder's session, probes its link while leading and, closed,
    releases the lock at once."""

    def __init__(self, store: "PgStore", worker_id: str) -> None:
        self._store = store
        self._worker_id = worker_id
        self._session: Session | None = None

    async def open(self) -> None:
        self._session = await Session.open(self._store)
        await self._session.run(single(self._store.leadership.name_session(self._worker_id)))

    def _open_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the leadership session is not open")
        return self._session

    async def try_lock(self) -> bool:
        return await self._open_session().run(single(self._store.leadership.try_lock()))

    async def depose_dead_leader(self) -> bool:
        """End the lock holder's session if its worker is dead by the liveness rule;
        whether one was ended. Needs the right to end it (the same role, or
        ``pg_signal_backend``); without it, the server's keepalives still end it."""
        try:
            return await self._open_session().run(single(self._store.leadership.depose_dead_leader()))
        except psycopg.errors.InsufficientPrivilege:
            log.debug("may not end the dead leader's session; waiting for the server to drop it")
            return False

    async def probe(self, timeout: float) -> None:
        """Raises if the link does not answer within ``timeout``: the lock may be gone."""
        await self._open_session().probe(timeout)

    async def close(self) -> None:
        """Release the lock explicitly (a successor may take over as soon as this returns),
        then close; quietly, as a broken session is gone already, its lock with it."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close(release_locks=True)
