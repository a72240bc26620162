"""Leadership: at most one worker at a time runs the leader-only plugins (recovery,
pruning, cron).

Mechanism: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection
dedicated to it. Postgres grants such a lock to one session at a time, so two leaders
cannot exist in the database's view, and it releases the lock the moment that session
ends — a ``kill -9`` closes the socket — so a successor takes over within one ``interval``.
A leader's host that vanishes from the network leaves a session the server believes in
until TCP keepalives give up (raised for this session below); its would-be successors end
that session themselves once the leader's worker is past its ``liveness_timeout``, the rule
by which recovery already counts it dead. Unlike a lease row, this needs no clock
comparisons and no writes while leading. It does need a real session: point workers at
Postgres directly (or a session-mode pool), not through a transaction-pooling PgBouncer.

What it cannot do alone is stop a leader whose link silently died from *believing* it
still leads; so the leader probes its connection every ``interval`` and steps down when
the probe fails or takes longer than ``interval``. Leader-only work is written to be safe
even if two workers did it at once for that moment (every statement is guarded by the row
state it expects), so leadership is an efficiency guarantee, never a correctness one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from chancy.errors import ConfigurationError
from chancy.plugin import Plugin

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.worker import Worker

log = logging.getLogger("chancy.leadership")

APPLICATION_NAME_PREFIX = "chancy-leader:"


class Leadership(Plugin):
    """Runs on every worker; the one that holds the lock calls ``worker.set_leader(True)``."""

    def __init__(self, interval: float = 2.0) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Leadership interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)

    async def run(self, worker: "Worker") -> None:
        app = worker.app
        key = app.names.advisory_key("leader")
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await app.connect()
                await conn.execute(
                    "SELECT set_config('application_name', %s, false), "
                    "set_config('tcp_keepalives_idle', '10', false), "
                    "set_config('tcp_keepalives_interval', '5', false), "
                    "set_config('tcp_keepalives_count', '3', false)",
                    ((APPLICATION_NAME_PREFIX + worker.worker_id)[:63],))
                while not await _try_lock(conn, key):
                    await _depose_dead_leader(conn, app, key)
                    await asyncio.sleep(self.interval)
                log.info("worker %s is now the leader", worker.worker_id)
                worker.set_leader(True)
                while True:
                    await asyncio.sleep(self.interval)
                    await asyncio.wait_for(conn.execute("SELECT 1"), self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost connection means a lost lock
                if worker.is_leader:
                    log.warning("worker %s lost leadership (%s)", worker.worker_id, exc)
                else:
                    log.debug("leadership connection failed (%s)", exc)
            finally:
                worker.set_leader(False)
                if conn is not None:
                    await _close_quietly(conn)
            await asyncio.sleep(self.interval)


async def _try_lock(conn: psycopg.AsyncConnection, key: int) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    return bool(row and row[0])


def _holder_filter(key: int) -> sql.Composed:
    """Selects the session holding leadership ``key`` in this database (one at most)."""
    return sql.SQL(
        "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = {} AND l.objid::bigint = {} "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).format(sql.Literal(key >> 32), sql.Literal(key & 0xFFFFFFFF))


async def _depose_dead_leader(conn: psycopg.AsyncConnection, app: "Chancy", key: int) -> None:
    """End the session holding the lock if its worker is dead by the liveness rule.

    A leader's host that drops off the network keeps its session open in the server's view
    until TCP keepalives give up on it (25 s here; through a session pooler, the pooler's
    own keepalives: hours), and the lock with it. But its worker stopped heartbeating, and
    once past its ``liveness_timeout`` it is dead to recovery: its jobs are being handed to
    others. Ending its leadership session then is the same judgement, applied to the lock,
    so a successor takes over within ``liveness_timeout`` plus one ``interval``. A leader
    deposed wrongly (alive, but unable to heartbeat for that long) probes a dead connection
    and steps down, as after any lost link. Needs the right to end the holder's session
    (the same role, or ``pg_signal_backend``); without it, keepalives still end it."""
    statement = sql.SQL(
        "SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE {holder} AND a.application_name LIKE {prefix} AND NOT EXISTS ("
        "SELECT 1 FROM {workers} w WHERE w.expires_at > now() "
        "AND left({name} || w.worker_id, 63) = a.application_name)"
    ).format(holder=_holder_filter(key), prefix=sql.Literal(APPLICATION_NAME_PREFIX + "%"),
             workers=app.names.ident("workers"), name=sql.Literal(APPLICATION_NAME_PREFIX))
    try:
        cur = await conn.execute(statement)
        if any(row[0] for row in await cur.fetchall()):
            log.warning("ended the leadership session of a worker past its liveness timeout")
    except psycopg.errors.InsufficientPrivilege:
        log.debug("may not end the dead leader's session; waiting for the server to drop it")


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    """Unlock explicitly, so a successor can take over as soon as this returns (a backend
    releases the locks of a closed session only once it has noticed), then close."""
    try:
        if not conn.broken:
            await asyncio.wait_for(conn.execute("SELECT pg_advisory_unlock_all()"), 2)
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # noqa: BLE001 - a broken connection is gone either way, and its locks with it
        pass


async def current_leader(app: "Chancy") -> str | None:
    """The worker id of the current leader (as seen by the database), or None.

    Reads who holds the advisory lock: the truth, not a cached claim. (Postgres keeps 63
    bytes of a session name, so a very long worker id comes back cut.)"""
    key = app.names.advisory_key("leader")
    async with app.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE {}").format(_holder_filter(key)))
        row = await cur.fetchone()
    if row is None:
        return None
    name: str = row[0]
    return name[len(APPLICATION_NAME_PREFIX):] if name.startswith(APPLICATION_NAME_PREFIX) else name
