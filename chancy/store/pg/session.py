"""Dedicated sessions: a connection of its own (on ``session_dsn``) whose session state —
advisory locks, settings, LISTENs — lasts until it closes, for what must hold such state
(the leader lock, a namespace's cron firing lock). Closing it (or a ``kill -9`` of its
process) ends that state, so a lock held this way cannot outlive its holder."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg

from chancy.store.pg.statements import SqlFile, Steps, drive_async, single, Statement

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore

SESSION_SQL = SqlFile("session.sql", {})


class Session:
    """One dedicated connection; make it with :meth:`open`, end it with :meth:`close`."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, store: "PgStore") -> "Session":
        return cls(await store.connect())

    async def run(self, steps: Steps) -> Any:
        """Run an operation's statements on this session, each in its own transaction."""
        return await drive_async(self._conn, steps)

    async def run_atomically(self, steps: Steps) -> Any:
        """Run an operation in one transaction of this session: all or nothing."""
        async with self._conn.transaction():
            return await drive_async(self._conn, steps)

    async def probe(self, timeout: float) -> None:
        """A round trip; raises if the link does not answer within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self.run(single(Statement(SESSION_SQL["probe"], {})))

    async def close(self, *, release_locks: bool = False) -> None:
        """End the session, quietly (a broken link is gone already, its locks with it).
        ``release_locks`` unlocks its advisory locks first, so a successor need not wait
        for the server to notice the closed socket."""
        try:
            if release_locks and not self._conn.broken:
                async with asyncio.timeout(2):
                    await self.run(single(Statement(SESSION_SQL["release_locks"], {})))
            async with asyncio.timeout(5):
                await self._conn.close()
        except Exception:  # noqa: BLE001 - nothing left to release
            pass
