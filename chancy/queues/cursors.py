"""Connections of Chancy's own pools, each keeping one cursor for the job statements.

psycopg's ``connection.execute`` makes a new cursor per statement, and a cursor caches
the dumpers and loaders it looks up: a fresh one looks them up again. That was ~10 µs of
client CPU per statement, a fifth of what a single push costs the client. A connection
checked out of a pool is used by one caller at a time, so its cursor is too.
Connections passed in by callers (a push in their transaction) get a fresh cursor as
usual: their row factory or adapters may differ, and we keep nothing on them.
"""

from __future__ import annotations

from typing import Any

import psycopg


class PooledConnection(psycopg.Connection[Any]):
    _statement_cursor: psycopg.Cursor[Any] | None = None

    def statement_cursor(self) -> psycopg.Cursor[Any]:
        if self._statement_cursor is None or self._statement_cursor.closed:
            self._statement_cursor = self.cursor()
        return self._statement_cursor


class AsyncPooledConnection(psycopg.AsyncConnection[Any]):
    _statement_cursor: psycopg.AsyncCursor[Any] | None = None

    def statement_cursor(self) -> psycopg.AsyncCursor[Any]:
        if self._statement_cursor is None or self._statement_cursor.closed:
            self._statement_cursor = self.cursor()
        return self._statement_cursor


def statement_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    return conn.statement_cursor() if isinstance(conn, PooledConnection) else conn.cursor()


def async_statement_cursor(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
    return conn.statement_cursor() if isinstance(conn, AsyncPooledConnection) else conn.cursor()
