"""A single Postgres connection per process for code that Celery calls synchronously
(the kombu transport, the result backend), safe across Celery's prefork forks; and
running an idempotent operation again after the connection dropped."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql

from chancy.store.pg.dsn import resolve_session_dsn
from chancy.store.pg.store import USE_GENERIC_PLANS, statement_kwargs
from chancy.store.pg.statements import SqlFile, Steps, drive_sync

log = logging.getLogger("chancy.compat.transport")

#: How long an operation keeps retrying after its connection dropped: long enough for a
#: Postgres restart or a failover, short enough that a server gone for good is reported.
RECONNECT_TIMEOUT = 30.0
RECONNECT_MAX_PAUSE = 2.0


@functools.cache
def _listen_statement(channel: str) -> sql.Composed:
    return SqlFile("celery_connection.sql", {}).composed("listen", channel=sql.Identifier(channel))


class Listening:
    """A connection LISTENing on some channels, for as long as it lives."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def notifications(self, timeout: float, stop_after: int | None = None) -> Iterator[psycopg.Notify]:
        """The notifications that arrive within ``timeout`` seconds (at most ``stop_after``)."""
        return self._conn.notifies(timeout=timeout, stop_after=stop_after)

    def fileno(self) -> int:
        """The connection's socket, for an event loop to poll (see chancy.compat.kombu_loop)."""
        return self._conn.fileno()

    @property
    def closed(self) -> bool:
        """Closed (after a failure): the next ``listen()`` connects again."""
        return self._conn.closed


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
        """Drive an operation's statements (see :mod:`chancy.store.pg.statements`),
        optionally all in one transaction."""
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

    def listen(self, *channels: str) -> Listening:
        """The connection, LISTENing on ``channels`` (for this connection's lifetime)."""
        conn = self.connection()
        listening: set[str] = getattr(conn, "_chancy_listening", set())
        for channel in channels:
            if channel not in listening:
                conn.execute(_listen_statement(channel))
                listening = listening | {channel}
                conn._chancy_listening = listening  # type: ignore[attr-defined]
        return Listening(conn)

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


def run_reconnecting(database: ProcessConnection, operation: Callable[[], Steps], action: str,
                     *, transaction: bool = False) -> Any:
    """Run an idempotent operation, again after a dropped connection (with a log line),
    for up to :data:`RECONNECT_TIMEOUT` seconds, so a restart of Postgres neither loses a
    published message nor turns a stored result into an error; then the error is raised."""
    started = time.monotonic()
    pause = 0.05
    while True:
        try:
            return database.run(operation(), transaction=transaction)
        except psycopg.OperationalError as exc:
            if time.monotonic() - started + pause > RECONNECT_TIMEOUT:
                raise
            log.warning("%s: the connection to Postgres failed (%s); retrying in %.2f s",
                        action, first_line(exc), pause)
            time.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX_PAUSE)


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's connection errors run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
