"""A single Postgres connection per process for code that Celery calls synchronously
(the kombu transport, the result backend), safe across Celery's prefork forks."""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg

from chancy.store.pg.dsn import resolve_session_dsn
from chancy.store.pg.store import USE_GENERIC_PLANS, statement_kwargs
from chancy.store.pg.statements import drive_sync, Steps


class ProcessConnection:
    """One autocommit connection, opened on first use and reopened after a fork or an
    error: a connection never crosses a fork, so prefork children get their own.
    ``behind_pooler``: the DSN goes through a transaction pooler, so nothing is prepared
    and nothing is set on the session (such a connection cannot LISTEN either)."""

    def __init__(self, dsn: str, *, behind_pooler: bool = False) -> None:
        self.dsn = dsn
        self.behind_pooler = behind_pooler
        self._conn: psycopg.Connection | None = None
        self._pid = 0
        self.lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = psycopg.Connection.connect(self.dsn, **statement_kwargs(self.behind_pooler))
            if not self.behind_pooler:  # the transport claims; all our states are literals
                self._conn.execute(USE_GENERIC_PLANS)
            self._pid = os.getpid()
        return self._conn

    def run(self, steps: Steps, transaction: bool = False) -> Any:
        """Drive an operation's statements (see :mod:`chancy.queues.sql`), optionally
        all in one transaction."""
        with self.lock:
            try:
                conn = self.connection()
                if transaction:
                    with conn.transaction():
                        return drive_sync(conn, steps)
                return drive_sync(conn, steps)
            except psycopg.OperationalError:
                self.close()
                raise

    def listen(self, channel: str) -> psycopg.Connection:
        """The connection, LISTENing on ``channel`` (for this connection's lifetime)."""
        conn = self.connection()
        listening = getattr(conn, "_chancy_listening", set())
        if channel not in listening:
            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
            conn._chancy_listening = listening | {channel}  # type: ignore[attr-defined]
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()


def statement_and_listen_connections(dsn: str, session_url: str | None) -> tuple[ProcessConnection, ProcessConnection]:
    """The connection for statements and the one to LISTEN on: with a session DSN
    (``session_url`` or ``CHANCY_SESSION_DSN``), ``dsn`` goes through a transaction pooler
    and the LISTEN connection goes straight to Postgres (docs/poolers.md)."""
    session_dsn = resolve_session_dsn(session_url)
    return ProcessConnection(dsn, behind_pooler=session_dsn is not None), ProcessConnection(session_dsn or dsn)
