"""Operations run in one transaction of a pooled connection: all their statements commit
together, or none does (e.g. replacing a set of cron schedules)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chancy.store.pg.statements import Steps, drive_async, drive_sync

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore


async def run_atomically(store: "PgStore", steps: Steps) -> Any:
    async with store.connection() as conn, conn.transaction():
        return await drive_async(conn, steps)


def run_atomically_sync(store: "PgStore", steps: Steps) -> Any:
    with store.connection_sync() as conn, conn.transaction():
        return drive_sync(conn, steps)
