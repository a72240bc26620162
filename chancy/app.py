"""``Chancy``: configuration, connection pools, queues and plugins, and the push / get /
wait / cancel API (async, with thin sync twins for callers without an event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator, ParamSpec, Sequence, TypeVar, overload

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chancy import execution, migrations
from chancy.errors import ConfigurationError, DatabaseUnavailableError
from chancy.job import Backoff, Job, JobRecord, Limit, Reference
from chancy.listener import KeyedEvents, Listener
from chancy.namespaces import DEFAULT_NAMESPACE, validate_namespace
from chancy.queue import QueuePlugin
from chancy.queues.cursors import AsyncPooledConnection, PooledConnection
from chancy.queues.sql import USE_GENERIC_PLANS, JobSQL, finished_ids
from chancy.rate_limits import RateLimitLike
from chancy.redaction import redact
from chancy.task import Task

log = logging.getLogger("chancy")

JobTarget = Job | Task | Callable[..., Any] | str
P = ParamSpec("P")
R = TypeVar("R")


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the given one, else ``CHANCY_DSN``, else the embedded server."""
    dsn = dsn or os.environ.get("CHANCY_DSN")
    if not dsn:
        from chancy import embedded

        return embedded.default_dsn()
    if dsn.startswith("chancy+"):
        dsn = dsn[len("chancy+"):]
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn[len("postgres://"):]
    scheme = dsn.split("://", 1)[0] if "://" in dsn else None
    try:
        if scheme not in (None, "postgresql"):
            raise ValueError(f"unsupported scheme {scheme + '://'!r}")
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        ports = str(params.get("port", "5432")).split(",")
        if not all(port.strip().isdigit() for port in ports):
            raise ValueError(f"port {params.get('port')!r} is not a number")
    except (psycopg.ProgrammingError, ValueError) as exc:
        raise ConfigurationError(
            f"The DSN {redact(dsn)!r} is not a valid Postgres connection string ({redact(str(exc).strip(), dsn)}). "
            "Use e.g. 'postgresql://user:password@host:5432/dbname'."
        ) from None
    return dsn


def resolve_session_dsn(session_dsn: str | None) -> str | None:
    """The DSN for session-bound work when ``dsn`` goes through a transaction pooler: the
    given one, else ``CHANCY_SESSION_DSN``, else None (``dsn`` holds sessions itself)."""
    session_dsn = session_dsn or os.environ.get("CHANCY_SESSION_DSN")
    if not session_dsn:
        return None
    try:
        return resolve_dsn(session_dsn)
    except ConfigurationError as exc:
        raise ConfigurationError(f"session_dsn (or CHANCY_SESSION_DSN): {exc}") from None


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


class Chancy:
    """A Chancy application: where jobs are stored, which queues exist, how to reach them.

    Use ``async with chancy:`` (or just call its methods: pools open on first use). Each
    pool holds up to ``max_connections``: the shared one, the sync one (``push_sync``) and,
    in a worker, the one its claims use (one connection per queue claiming at once).

    Behind a transaction-pooling proxy (PgBouncer ``pool_mode = transaction``, RDS Proxy…),
    give ``dsn`` through the proxy and ``session_dsn`` (or ``CHANCY_SESSION_DSN``) straight
    to Postgres (or through a session-mode pool): the pools then send statements unprepared
    and set nothing on their sessions, and what needs a session of its own (the LISTEN
    connection, migration and leadership advisory locks, CLI commands) uses ``session_dsn``.
    See docs/poolers.md.

    A worker runs only registered tasks (``@chancy.task``): a job naming anything else
    fails for good, since whoever can write to a queue picks its task names.
    ``allowed_imports=["myproj.jobs"]`` (or ``CHANCY_ALLOWED_IMPORTS``) also lets it run
    functions defined under those module prefixes by their import path.

    ``namespace`` names the app's periodic schedules (default ``"default"``): apps sharing
    a database each sync, list and fire only their own (see chancy/plugins/cron.py)."""

    def __init__(
        self,
        dsn: str | None = None,
        plugins: Sequence[Any] = (),
        *,
        prefix: str = "chancy_",
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        session_dsn: str | None = None,
        allowed_imports: Sequence[str] = (),
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        if min_connections < 0 or max_connections < 1 or min_connections > max_connections:
            raise ConfigurationError(
                f"Need 0 <= min_connections <= max_connections and max_connections >= 1, "
                f"got {min_connections} and {max_connections}"
            )
        if connect_timeout <= 0:
            raise ConfigurationError(f"connect_timeout must be positive, got {connect_timeout!r}")
        # Resolved now when given (so a malformed DSN fails here); the embedded default
        # is started only when a connection is first needed.
        self._resolved_dsn = resolve_dsn(dsn) if (dsn or os.environ.get("CHANCY_DSN")) else None
        self._session_dsn = resolve_session_dsn(session_dsn)
        #: Module prefixes whose plain functions this process's workers also run by import
        #: path; a worker otherwise runs registered tasks only. See execution.allow_imports.
        self.allowed_imports = execution.allow_imports(allowed_imports)
        self.names = migrations.Names(prefix)
        #: Whose periodic schedules this app syncs, lists and fires (chancy.plugins.cron).
        self.namespace = validate_namespace(namespace)
        self.job_sql = JobSQL(self.names)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.queues: dict[str, QueuePlugin] = {}
        self.plugins: list[Any] = []
        #: The tasks registered with ``@app.task``, by name.
        self.tasks: dict[str, Task] = {}
        for plugin in plugins:
            self.add_plugin(plugin)
        self._async_pool: AsyncConnectionPool | None = None
        self._claim_pool: AsyncConnectionPool | None = None
        self._sync_pool: ConnectionPool | None = None
        self._session_sync_pool: ConnectionPool | None = None
        self._open_lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()
        self._parked: psycopg.Connection | None = None  # see lease_sync
        self._park_lock = threading.Lock()
        self._listener: Listener | None = None
        self._done = KeyedEvents()

    def __repr__(self) -> str:
        return f"<Chancy queues={list(self.queues)} prefix={self.names.prefix!r}>"

    # --- configuration ----------------------------------------------------------------
    def add_plugin(self, plugin: Any) -> None:
        if isinstance(plugin, QueuePlugin):
            if plugin.name in self.queues:
                raise ConfigurationError(f"Queue {plugin.name!r} is declared twice")
            plugin.bind(self)
            self.queues[plugin.name] = plugin
            return
        from chancy.plugin import Plugin

        if not isinstance(plugin, Plugin):
            raise ConfigurationError(
                f"{plugin!r} is not a plugin: pass Queue(...) objects or chancy.plugin.Plugin instances"
            )
        plugin.bind(self)
        self.plugins.append(plugin)

    def queue(self, name: str) -> QueuePlugin:
        """The queue of that name; an undeclared name is a Postgres queue served elsewhere."""
        queue = self.queues.get(name)
        if queue is None:
            from chancy.queues.pg import Queue

            queue = Queue(name)
            queue.bind(self)
        return queue

    @property
    def dsn(self) -> str:
        if self._resolved_dsn is None:
            self._resolved_dsn = resolve_dsn(None)
        return self._resolved_dsn

    @property
    def session_dsn(self) -> str:
        """Where dedicated connections (LISTEN, advisory locks, CLI commands) go."""
        return self._session_dsn or self.dsn

    @property
    def behind_pooler(self) -> bool:
        """Whether ``dsn`` goes through a transaction pooler (a ``session_dsn`` was given)."""
        return self._session_dsn is not None

    @dsn.setter
    def dsn(self, dsn: str) -> None:
        """Point the app at another server (``chancy worker -A proj --dsn …``) before it connects."""
        if self._async_pool is not None or self._sync_pool is not None or self._listener is not None:
            raise ConfigurationError("Cannot change the DSN of an app that has already connected")
        self._resolved_dsn = resolve_dsn(dsn)

    @overload
    def task(self, func: Callable[P, R], *, name: str | None = None, queue: str = "default", priority: int = 0,
             max_attempts: int = 1, limits: Sequence[Limit] = (), backoff: Backoff | None = None,
             rate_limit: RateLimitLike = None) -> Task[P, R]: ...

    @overload
    def task(self, func: None = None, *, name: str | None = None, queue: str = "default", priority: int = 0,
             max_attempts: int = 1, limits: Sequence[Limit] = (), backoff: Backoff | None = None,
             rate_limit: RateLimitLike = None) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        limits: Sequence[Limit] = (),
        backoff: Backoff | None = None,
        rate_limit: RateLimitLike = None,
    ) -> Any:
        """Register a function as a task: ``@chancy.task`` or ``@chancy.task(queue=...)``;
        ``rate_limit="10/m"`` caps its starts across all workers. The task keeps the
        function's parameter types: ``task.push(...)`` is checked like a call."""

        def decorate(f: Callable[..., Any]) -> Task:
            return Task(self, f, name=name, queue=queue, priority=priority,
                        max_attempts=max_attempts, limits=limits, backoff=backoff, rate_limit=rate_limit)

        return decorate(func) if func is not None else decorate

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

    async def claim_pool(self) -> AsyncConnectionPool:
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

    def open_sync(self) -> ConnectionPool:
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

    async def async_pool(self) -> AsyncConnectionPool:
        """The async pool, opened on first use."""
        await self.open()
        assert self._async_pool is not None
        return self._async_pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with (await self.async_pool()).connection() as conn:
            yield conn

    def lease_sync(self) -> psycopg.Connection:
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
        conn._chancy_pool = pool  # type: ignore[attr-defined]
        conn._chancy_leased_at = time.monotonic()  # type: ignore[attr-defined]
        return conn

    def release_sync(self, conn: psycopg.Connection) -> None:
        """Hand back a :meth:`lease_sync` connection: kept aside when idle and healthy, out
        of its pool for at most :data:`PARKED_SECONDS` at a time (so the pool's upkeep, such
        as replacing old connections, still reaches it); else returned to its pool, which
        rolls back an open transaction and drops a broken connection."""
        if conn.pgconn.transaction_status == IDLE and time.monotonic() - conn._chancy_leased_at < PARKED_SECONDS \
                and self._parked is None:
            with self._park_lock:
                if self._parked is None and self._sync_pool is conn._chancy_pool:  # type: ignore[attr-defined]
                    self._parked = conn
                    return
        conn._chancy_pool.putconn(conn)  # type: ignore[attr-defined]

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
            parked._chancy_pool.putconn(parked)  # type: ignore[attr-defined]
        with self._sync_lock:
            for pool in (self._sync_pool, self._session_sync_pool):
                if pool is not None:
                    pool.close()
            self._sync_pool = self._session_sync_pool = None

    async def __aenter__(self) -> "Chancy":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> "Chancy":
        self.open_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    async def listener(self) -> Listener:
        """The process's LISTEN connection (started on first use)."""
        if self._listener is None:
            sql_ = self.job_sql
            self._listener = Listener(
                self.connect, [sql_.pushed_channel, sql_.cancel_channel, sql_.queues_channel]
            )
        await self._listener.start(timeout=self.connect_timeout)
        return self._listener

    async def done_waiters(self) -> KeyedEvents:
        """Events for waiters on finished jobs. The LISTEN on completions starts with the
        first waiter: a worker nobody waits on would otherwise be told of every job it
        finishes (measured: ~15% of its drain rate)."""
        listener = await self.listener()
        done = self.job_sql.done_channel
        if listener.add_channel(done):
            listener.subscribe(done, self._on_done)
            listener.on_reconnect(self._done.fire_all)
            await listener.restart(timeout=self.connect_timeout)
        return self._done

    def _on_done(self, payload: str) -> None:
        for job_id in finished_ids(payload):
            self._done.fire(job_id)

    # --- schema -------------------------------------------------------------------------
    async def migrate(self, to_version: int | None = None) -> list[int]:
        """Apply pending migrations (under an advisory lock); returns versions applied."""
        async with await self.connect() as conn:
            return await migrations.apply_async(conn, self.names, to_version)

    async def schema_version(self) -> int:
        async with self.connection() as conn:
            return await migrations.current_version_async(conn, self.names)

    # --- pushing ---------------------------------------------------------------------------
    @staticmethod
    def _as_job(target: JobTarget, args: tuple, kwargs: dict) -> Job:
        if isinstance(target, Job):
            if args or kwargs:
                raise TypeError("push(Job) takes no extra arguments: put them in Job(args=, kwargs=)")
            return target
        if isinstance(target, Task):
            return target.job(*args, **kwargs)
        return Job(target, args=args, kwargs=kwargs)

    def _group_by_queue(self, jobs: Sequence[Job]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.queue, []).append(i)
        return groups

    # A task or function target types the arguments after it (a type checker reports a
    # call its function could not take); a Job or a task name takes whatever it is given.
    @overload
    async def push(self, target: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Reference: ...

    @overload
    async def push(self, target: Job | str, /, *args: Any, **kwargs: Any) -> Reference: ...

    async def push(self, target: JobTarget, /, *args: Any, **kwargs: Any) -> Reference:
        """Push one job: ``push(task, *args, **kwargs)`` or ``push(Job(...))``."""
        return (await self.push_many([self._as_job(target, args, kwargs)]))[0]

    @overload
    def push_sync(self, target: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Reference: ...

    @overload
    def push_sync(self, target: Job | str, /, *args: Any, **kwargs: Any) -> Reference: ...

    def push_sync(self, target: JobTarget, /, *args: Any, **kwargs: Any) -> Reference:
        return self.push_many_sync([self._as_job(target, args, kwargs)])[0]

    async def push_many(self, jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
        """Push many jobs, one statement per queue. With ``connection`` (a psycopg
        AsyncConnection) the jobs exist only if the caller's transaction commits."""
        refs: list[Reference | None] = [None] * len(jobs)
        for name, indexes in self._group_by_queue(jobs).items():
            ids = await self.queue(name).push([jobs[i] for i in indexes], connection)
            for i, job_id in zip(indexes, ids):
                refs[i] = Reference(self, job_id, name)
        return refs  # type: ignore[return-value]

    def push_many_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
        if connection is None and len(jobs) == 1:  # every push_sync and .delay(): no grouping
            queue = jobs[0].queue
            return [Reference(self, self.queue(queue).push_sync(jobs)[0], queue)]
        refs: list[Reference | None] = [None] * len(jobs)
        for name, indexes in self._group_by_queue(jobs).items():
            ids = self.queue(name).push_sync([jobs[i] for i in indexes], connection)
            for i, job_id in zip(indexes, ids):
                refs[i] = Reference(self, job_id, name)
        return refs  # type: ignore[return-value]

    # --- reading, waiting, cancelling --------------------------------------------------------
    def reference(self, job_id: uuid.UUID | str, queue: str | None = None) -> Reference:
        """A reference to a job by id (the queue defaults to the Postgres table, which
        holds every Postgres queue's jobs)."""
        return Reference(self, uuid.UUID(str(job_id)), queue or "default")

    def _ref(self, ref: Reference | uuid.UUID | str) -> Reference:
        return ref if isinstance(ref, Reference) else self.reference(ref)

    async def get_job(self, ref: Reference | uuid.UUID | str) -> JobRecord | None:
        ref = self._ref(ref)
        return await self.queue(ref.queue).get(ref.id)

    def get_job_sync(self, ref: Reference | uuid.UUID | str) -> JobRecord | None:
        ref = self._ref(ref)
        return self.queue(ref.queue).get_sync(ref.id)

    async def wait(self, ref: Reference | uuid.UUID | str, timeout: float | None = None) -> JobRecord:
        ref = self._ref(ref)
        return await self.queue(ref.queue).wait(ref.id, timeout)

    def wait_sync(self, ref: Reference | uuid.UUID | str, timeout: float | None = None) -> JobRecord:
        ref = self._ref(ref)
        return self.queue(ref.queue).wait_sync(ref.id, timeout)

    async def cancel(self, ref: Reference | uuid.UUID | str) -> bool:
        ref = self._ref(ref)
        return await self.queue(ref.queue).cancel(ref.id)

    def cancel_sync(self, ref: Reference | uuid.UUID | str) -> bool:
        ref = self._ref(ref)
        return self.queue(ref.queue).cancel_sync(ref.id)

    async def requeue(self, ref: Reference | uuid.UUID | str) -> bool:
        """Run a failed, cancelled or expired job again (e.g. once its code is deployed)."""
        ref = self._ref(ref)
        return await self.queue(ref.queue).requeue(ref.id)

    def requeue_sync(self, ref: Reference | uuid.UUID | str) -> bool:
        ref = self._ref(ref)
        return self.queue(ref.queue).requeue_sync(ref.id)
