"""``PgStore``: every pool and connection of one app, and the door its statements go
through (:meth:`PgStore.run` / :meth:`PgStore.run_sync`, or a dedicated session).

Three pools, each opened on first use: the shared async one, the claim pool (workers'
claims only, on generic plans) and the sync one (``push_sync``, ``.delay()``, waits);
behind a transaction pooler a fourth, on ``session_dsn``, for sync LISTENs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chancy.errors import ConfigurationError, DatabaseUnavailableError
from chancy.migrations import Names
from chancy.redaction import redact
from chancy.store.pg.admin import AdminStatements
from chancy.store.pg.celery_canvas import CanvasSQL
from chancy.store.pg.celery_results import ResultSQL
from chancy.store.pg.cluster import ClusterSQL
from chancy.store.pg.cluster_store import PgCluster
from chancy.store.pg.queries import PgJobQueries
from chancy.store.pg.cursors import AsyncPooledConnection, PooledConnection
from chancy.store.pg.dashboard import DashboardStatements
from chancy.store.pg.dsn import resolve_dsn, resolve_session_dsn
from chancy.store.pg.jobs import JobSQL
from chancy.store.pg.leadership import LeadershipSQL
from chancy.store.pg.listener import Listener
from chancy.store.pg.migrations import Schema
from chancy.store.pg.rates import RateSQL
from chancy.store.pg.statements import Steps, drive_async, drive_sync
from chancy.store.pg.worker import WorkerSQL

#: Set on connections that claim jobs. Postgres re-plans a prepared statement whenever its
#: generic plan looks costlier than the custom ones. Beside many future-scheduled rows the
#: claim's does (its LIMIT is unknown, so taken as 10% of the due rows, which the planner
#: overestimates ~1,000-fold), and every claim paid ~0.5 ms of planning. The claim reads
#: partial indexes whose states are literals, so its plan does not depend on its
#: parameters. Not for the app's shared pool: there a parameter such as ``state = %s``
#: needs a custom plan to use a partial index.
USE_GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"

#: A sync connection leased again and again stays out of its pool this long at most.
PARKED_SECONDS = 30.0
IDLE = pq.TransactionStatus.IDLE


def statement_kwargs(behind_pooler: bool) -> dict[str, Any]:
    """Connection options for running statements: autocommit and, behind a transaction
    pooler, no server-side prepared statements (the pooler hands the next transaction to
    another server connection, which never saw the ``PREPARE``)."""
    return {"autocommit": True, "prepare_threshold": None} if behind_pooler else {"autocommit": True}


async def _use_generic_plans(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(USE_GENERIC_PLANS)


class PgStore:
    """The pools and connections of one app (see the module's docstring). ``dsn`` None:
    ``default_dsn()`` is asked when a connection is first needed (the embedded server,
    or a Django project's database)."""

    def __init__(
        self,
        dsn: str | None,
        *,
        names: Names,
        session_dsn: str | None = None,
        default_dsn: Callable[[], str] = lambda: resolve_dsn(None),
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        # Resolved now when given (so a malformed DSN fails here); the default is asked
        # for only when a connection is first needed.
        self._resolved_dsn = resolve_dsn(dsn) if (dsn or os.environ.get("CHANCY_DSN")) else None
        self._default_dsn = default_dsn
        self._session_dsn = resolve_session_dsn(session_dsn)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        #: The app's table prefix: every statement of this store names its tables.
        self.names = names
        self._async_pool: AsyncConnectionPool[AsyncPooledConnection] | None = None
        self._claim_pool: AsyncConnectionPool[AsyncPooledConnection] | None = None
        self._sync_pool: ConnectionPool[PooledConnection] | None = None
        self._session_sync_pool: ConnectionPool | None = None
        self._open_lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()
        self._parked: PooledConnection | None = None  # see lease_sync
        self._park_lock = threading.Lock()
        self._listener: Listener | None = None

    # --- where ------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        if self._resolved_dsn is None:
            self._resolved_dsn = self._default_dsn()
        return self._resolved_dsn

    @dsn.setter
    def dsn(self, dsn: str | None) -> None:
        """Point the store at another server (``--dsn``) before it connects; None: back to
        the default, asked for again when needed."""
        if self.connected:
            raise ConfigurationError("Cannot change the DSN of an app that has already connected")
        self._resolved_dsn = resolve_dsn(dsn) if dsn is not None else None

    @property
    def connected(self) -> bool:
        return self._async_pool is not None or self._sync_pool is not None or self._listener is not None

    @property
    def session_dsn(self) -> str:
        """Where dedicated connections (LISTEN, advisory locks, CLI commands) go."""
        return self._session_dsn or self.dsn

    @property
    def behind_pooler(self) -> bool:
        """Whether ``dsn`` goes through a transaction pooler (a ``session_dsn`` was given)."""
        return self._session_dsn is not None

    # --- statements, by concern (each composed once for this prefix, on first use) -------
    # One cached property per concern; the statements are in sql/<concern>.sql and the
    # code that builds their parameters in <concern>.py beside this file.
    @functools.cached_property
    def cluster(self) -> PgCluster:
        """The cluster's side of the store (:class:`chancy.store.cluster.ClusterStore`):
        heartbeats, recovery, pruning, queue settings, the leader lock, schedules."""
        return PgCluster(self)

    @functools.cached_property
    def queries(self) -> PgJobQueries:
        """Reading jobs by a filter (:class:`chancy.store.queries.JobQueries`)."""
        return PgJobQueries(self)

    @functools.cached_property
    def cluster_sql(self) -> ClusterSQL:
        """The statements of the cluster's chores (recovery, pruning) and queue settings."""
        return ClusterSQL(self.names)

    @functools.cached_property
    def leadership(self) -> LeadershipSQL:
        """The leader lock's statements and who holds it."""
        return LeadershipSQL(self.names)

    @functools.cached_property
    def schema(self) -> Schema:
        """The schema's version, and migrating it (on a session of its own)."""
        return Schema(self)

    @functools.cached_property
    def celery_canvas(self) -> CanvasSQL:
        """chancy.compat's canvas steps: parking, counting down, releasing, finishing."""
        return CanvasSQL(self.names)

    @functools.cached_property
    def celery_results(self) -> ResultSQL:
        """Celery states, results and relations on job rows (custom states, children,
        groups, stamps, forgetting)."""
        return ResultSQL(self.names)

    @functools.cached_property
    def jobs(self) -> JobSQL:
        """The jobs table's statements: push, read, claim, write back, cancel, requeue."""
        return JobSQL(self.names)

    @functools.cached_property
    def rates(self) -> RateSQL:
        """The task rate-limit gate's statements."""
        return RateSQL(self.names)

    @functools.cached_property
    def worker(self) -> WorkerSQL:
        """The worker's own statements: heartbeat, marks of starts, deregistration."""
        return WorkerSQL(self.names)

    @functools.cached_property
    def admin(self) -> AdminStatements:
        """Operators' statements (CLI, dashboard, test helpers): counts, workers, listings,
        purge and bulk actions, session limits."""
        return AdminStatements(self.names)

    @functools.cached_property
    def dashboard(self) -> DashboardStatements:
        """The dashboard's own statements: history, job pages, canvas, metrics windows."""
        return DashboardStatements(self.names)

    # --- running statements -------------------------------------------------------------
    async def run(self, steps: Steps, connection: Any = None) -> Any:
        """Run an operation's statements on ``connection`` (the caller's transaction) or
        on a connection of the shared pool."""
        if connection is not None:
            return await drive_async(connection, steps)
        async with self.connection() as conn:
            return await drive_async(conn, steps)

    def run_sync(self, steps: Steps, connection: Any = None) -> Any:
        if connection is not None:
            return drive_sync(connection, steps)
        with self.connection_sync() as conn:
            return drive_sync(conn, steps)

    async def run_in_session(self, steps: Steps) -> Any:
        """Run an operation on a dedicated connection of its own (to ``session_dsn``), for
        what must not share a pooled session (e.g. a long DDL under an advisory lock)."""
        async with await self.connect() as conn:
            return await drive_async(conn, steps)

    def run_in_session_sync(self, steps: Steps) -> Any:
        with self.connect_sync() as conn:
            return drive_sync(conn, steps)

    # --- connections ------------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        """Options of pooled connections (statements only: they may go through a pooler)."""
        return self._session_kwargs() | statement_kwargs(self.behind_pooler)

    def _session_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout))}

    def _unavailable(self, exc: Exception, dsn: str) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"Cannot connect to Postgres at {redact(dsn)}: {redact(str(exc).strip(), dsn)}. Check that the server "
            "is running and the DSN (host, port, user, password, database) is right."
        )

    async def _dial(self, dsn: str, options: dict[str, Any]) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(dsn, **options)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc, dsn) from None

    def _dial_sync(self, dsn: str, options: dict[str, Any]) -> psycopg.Connection:
        try:
            return psycopg.Connection.connect(dsn, **options)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc, dsn) from None

    async def connect(self) -> psycopg.AsyncConnection:
        """A new dedicated connection, on :attr:`session_dsn` (for LISTEN or advisory locks)."""
        return await self._dial(self.session_dsn, self._session_kwargs())

    def connect_sync(self) -> psycopg.Connection:
        return self._dial_sync(self.session_dsn, self._session_kwargs())

    async def open(self) -> None:
        if self._async_pool is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._async_pool is not None:
                return
            # Probe once so a bad DSN or a dead server fails fast with its real reason,
            # instead of as a pool timeout.
            await (await self._dial(self.dsn, self._connect_kwargs())).close()
            pool = AsyncConnectionPool(
                self.dsn, min_size=self.min_connections, max_size=self.max_connections,
                kwargs=self._connect_kwargs(), open=False, timeout=self.connect_timeout,
                name="chancy", connection_class=AsyncPooledConnection,
            )
            await pool.open(wait=self.min_connections > 0, timeout=self.connect_timeout)
            self._async_pool = pool

    async def claim_pool(self) -> AsyncConnectionPool[AsyncPooledConnection]:
        """Connections for workers' claims only, opened on the first claim: they always use
        the claim's generic plan (see :data:`chancy.queues.sql.USE_GENERIC_PLANS`)."""
        if self._claim_pool is None:
            await self.open()
            assert self._open_lock is not None
            async with self._open_lock:
                if self._claim_pool is None:
                    pool = AsyncConnectionPool(
                        self.dsn, min_size=0, max_size=self.max_connections, kwargs=self._connect_kwargs(),
                        # Behind a pooler nothing is prepared: every claim gets a custom plan.
                        configure=None if self.behind_pooler else _use_generic_plans,
                        open=False, timeout=self.connect_timeout,
                        name="chancy-claim", connection_class=AsyncPooledConnection,
                    )
                    await pool.open()
                    self._claim_pool = pool
        return self._claim_pool

    def open_sync(self) -> ConnectionPool[PooledConnection]:
        if self._sync_pool is not None:  # every sync push asks: skip the lock once open
            return self._sync_pool
        with self._sync_lock:
            if self._sync_pool is None:
                self._dial_sync(self.dsn, self._connect_kwargs()).close()
                pool = ConnectionPool(
                    self.dsn, min_size=min(1, self.min_connections), max_size=self.max_connections,
                    kwargs=self._connect_kwargs(), open=False, timeout=self.connect_timeout,
                    name="chancy-sync", connection_class=PooledConnection,
                )
                pool.open(wait=self.min_connections > 0, timeout=self.connect_timeout)
                self._sync_pool = pool
            return self._sync_pool

    def _open_session_sync(self) -> ConnectionPool:
        """Behind a transaction pooler, the sessions sync waits LISTEN on: pooled too, so a
        web process's ``AsyncResult.get()`` calls do not each dial Postgres."""
        if self._session_sync_pool is not None:
            return self._session_sync_pool
        with self._sync_lock:
            if self._session_sync_pool is None:
                self._dial_sync(self.session_dsn, self._session_kwargs()).close()
                pool = ConnectionPool(
                    self.session_dsn, min_size=0, max_size=self.max_connections, kwargs=self._session_kwargs(),
                    open=False, timeout=self.connect_timeout, name="chancy-session-sync",
                )
                pool.open()
                self._session_sync_pool = pool
            return self._session_sync_pool

    async def async_pool(self) -> AsyncConnectionPool[AsyncPooledConnection]:
        """The async pool, opened on first use."""
        await self.open()
        assert self._async_pool is not None
        return self._async_pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with (await self.async_pool()).connection() as conn:
            yield conn

    def lease_sync(self) -> PooledConnection:
        """A connection of the sync pool, for one use; hand it back with :meth:`release_sync`.
        The one handed back last waits aside for the next lease instead of going back into
        the pool: the pool's checkout and return were a quarter of a single push's client
        work (callgrind). At most one waits aside, and any lease takes it, so no user of
        the pool waits on it."""
        if self._parked is not None:
            with self._park_lock:
                conn, self._parked = self._parked, None
            if conn is not None:
                return conn
        pool = self.open_sync()
        conn = pool.getconn()
        conn._chancy_pool = pool
        conn._chancy_leased_at = time.monotonic()
        return conn

    def release_sync(self, conn: PooledConnection) -> None:
        """Hand back a :meth:`lease_sync` connection: kept aside when idle and healthy, out
        of its pool for at most :data:`PARKED_SECONDS` at a time (so the pool's upkeep, such
        as replacing old connections, still reaches it); else returned to its pool, which
        rolls back an open transaction and drops a broken connection."""
        if conn.pgconn.transaction_status == IDLE and time.monotonic() - conn._chancy_leased_at < PARKED_SECONDS \
                and self._parked is None:
            with self._park_lock:
                if self._parked is None and self._sync_pool is conn._chancy_pool:
                    self._parked = conn
                    return
        conn._chancy_pool.putconn(conn)

    @contextlib.contextmanager
    def connection_sync(self) -> Iterator[psycopg.Connection]:
        conn = self.lease_sync()
        try:
            yield conn
        finally:
            self.release_sync(conn)

    @contextlib.contextmanager
    def listening_connection_sync(self) -> Iterator[psycopg.Connection]:
        """A pooled connection to LISTEN on for a while (the caller UNLISTENs before giving
        it back): behind a transaction pooler, one from a pool on ``session_dsn``."""
        if not self.behind_pooler:
            with self.connection_sync() as conn:
                yield conn
            return
        with self._open_session_sync().connection() as conn:
            yield conn

    async def listener(self) -> Listener:
        """The process's LISTEN connection (started on first use)."""
        if self._listener is None:
            jobs = self.jobs  # workers hear of pushes, cancels and queue settings changes
            self._listener = Listener(self.connect, [jobs.pushed_channel, jobs.cancel_channel, jobs.queues_channel])
        await self._listener.start(timeout=self.connect_timeout)
        return self._listener

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        for pool in (self._claim_pool, self._async_pool):
            if pool is not None:
                await pool.close()
        self._claim_pool = self._async_pool = None
        self.close_sync()

    def close_sync(self) -> None:
        with self._park_lock:
            parked, self._parked = self._parked, None
        if parked is not None:
            parked._chancy_pool.putconn(parked)
        with self._sync_lock:
            for pool in (self._sync_pool, self._session_sync_pool):
                if pool is not None:
                    pool.close()
            self._sync_pool = self._session_sync_pool = None


    async def __aenter__(self) -> PgStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
