"""Connections of Chancy's own pools, each keeping one cursor for the job statements.

psycopg's ``connection.execute`` makes a new cursor per statement, and a cursor caches
the dumpers and loaders it looks up: a fresh one looks them up again. That was ~10 µs of
client CPU per statement, a fifth of what a single push costs the client. A connection
checked out of a pool is used by one caller at a time, so its cursor is too.
Connections passed in by callers (a push in their transaction) get a fresh cursor as
usual: their row factory or adapters may differ, and we keep nothing on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


class _KeepsCursor:
    """Mixed into a psycopg connection class (sync or async: ``cursor()`` is sync in both)."""

    _statement_cursor: Any = None

    def statement_cursor(self) -> Any:
        if self._statement_cursor is None or self._statement_cursor.closed:
            self._statement_cursor = self.cursor()  # type: ignore[attr-defined]
        return self._statement_cursor


class PooledConnection(_KeepsCursor, psycopg.Connection[Any]):
    #: Set by :meth:`PgStore.lease_sync <chancy.store.pg.store.PgStore.lease_sync>`: the
    #: pool the connection came from and when it was leased.
    _chancy_pool: ConnectionPool[PooledConnection]
    _chancy_leased_at: float


class AsyncPooledConnection(_KeepsCursor, psycopg.AsyncConnection[Any]):
    pass


def statement_cursor(conn: Any) -> Any:
    """The cursor to run a job statement on: the kept one of a pooled connection, else a
    fresh one (a :class:`psycopg.Cursor` or :class:`psycopg.AsyncCursor`, as ``conn``)."""
    return conn.statement_cursor() if isinstance(conn, _KeepsCursor) else conn.cursor()
