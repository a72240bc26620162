"""``Chancy``: configuration, connection pools, queues and plugins, and the push / get /
wait / cancel API (async, with thin sync twins for callers without an event loop)."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, ParamSpec, Sequence, TypeVar, overload


from chancy import execution, migrations
from chancy.concurrency import KeyRule
from chancy.errors import ConfigurationError
from chancy.hooks import Hooks
from chancy.job import Backoff, Job, JobRecord, Limit, Reference
from chancy.store.pg.listener import KeyedEvents, Listener
from chancy.namespaces import DEFAULT_NAMESPACE, validate_namespace
from chancy.queue import QueuePlugin
from chancy.store.pg.jobs import finished_ids
from chancy.rate_limits import RateLimitLike
from chancy.store.pg.dsn import resolve_dsn
from chancy.store.pg.store import PgStore
from chancy.task import Task

log = logging.getLogger("chancy")

JobTarget = Job | Task | Callable[..., Any] | str
P = ParamSpec("P")
R = TypeVar("R")


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
        self.allowed_imports = execution.allow_imports(allowed_imports)
        self.names = migrations.Names(prefix)
        #: Whose periodic schedules this app syncs, lists and fires (chancy.plugins.cron).
        self.namespace = validate_namespace(namespace)
        #: What this app's workers add to the transaction of a job's outcome (chancy.hooks).
        self.hooks = Hooks(self)
        self.queues: dict[str, QueuePlugin] = {}
        self.plugins: list[Any] = []
        #: The tasks registered with ``@app.task``, by name.
        self.tasks: dict[str, Task] = {}
        for plugin in plugins:
            self.add_plugin(plugin)
        #: Every pool and connection of the app: the door to the database.
        self.store = PgStore(
            dsn, names=self.names, session_dsn=session_dsn, default_dsn=self._default_dsn,
            min_connections=min_connections, max_connections=max_connections, connect_timeout=connect_timeout
        )
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

    @staticmethod
    def _default_dsn() -> str:
        """The DSN when none is given: ``CHANCY_DSN``, else the embedded server's."""
        return resolve_dsn(None)

    @property
    def dsn(self) -> str:
        return self.store.dsn

    @dsn.setter
    def dsn(self, dsn: str) -> None:
        """Point the app at another server (``chancy worker -A proj --dsn …``) before it connects."""
        self.store.dsn = dsn

    @property
    def session_dsn(self) -> str:
        """Where dedicated connections (LISTEN, advisory locks, CLI commands) go."""
        return self.store.session_dsn

    @property
    def behind_pooler(self) -> bool:
        """Whether ``dsn`` goes through a transaction pooler (a ``session_dsn`` was given)."""
        return self.store.behind_pooler

    @overload
    def task(self, func: Callable[P, R], *, name: str | None = None, queue: str = "default", priority: int = 0,
             max_attempts: int = 1, limits: Sequence[Limit] = (), backoff: Backoff | None = None,
             rate_limit: RateLimitLike = None, concurrency_key: KeyRule | None = None,
             concurrency: int | None = None) -> Task[P, R]: ...

    @overload
    def task(self, func: None = None, *, name: str | None = None, queue: str = "default", priority: int = 0,
             max_attempts: int = 1, limits: Sequence[Limit] = (), backoff: Backoff | None = None,
             rate_limit: RateLimitLike = None, concurrency_key: KeyRule | None = None,
             concurrency: int | None = None) -> Callable[[Callable[P, R]], Task[P, R]]: ...

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
        concurrency_key: KeyRule | None = None,
        concurrency: int | None = None,
    ) -> Any:
        """Register a function as a task: ``@chancy.task`` or ``@chancy.task(queue=...)``;
        ``rate_limit="10/m"`` caps its starts across all workers, ``concurrency_key`` and
        ``concurrency`` its running jobs per key (see :class:`Task`). The task keeps the
        function's parameter types: ``task.push(...)`` is checked like a call."""

        def decorate(f: Callable[..., Any]) -> Task:
            return Task(self, f, name=name, queue=queue, priority=priority,
                        max_attempts=max_attempts, limits=limits, backoff=backoff, rate_limit=rate_limit,
                        concurrency_key=concurrency_key, concurrency=concurrency)

        return decorate(func) if func is not None else decorate

    # --- connections ------------------------------------------------------------------
    # --- connections (the store's; these are for callers' own transactions) -----------
    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    def close_sync(self) -> None:
        self.store.close_sync()

    async def __aenter__(self) -> "Chancy":
        await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    def __enter__(self) -> "Chancy":
        self.store.open_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close_sync()

    async def listener(self) -> Listener:
        """The process's LISTEN connection (started on first use)."""
        return await self.store.listener()

    async def done_waiters(self) -> KeyedEvents:
        """Events for waiters on finished jobs. The LISTEN on completions starts with the
        first waiter: a worker nobody waits on would otherwise be told of every job it
        finishes (measured: ~15% of its drain rate)."""
        listener = await self.listener()
        done = self.store.jobs.done_channel
        if listener.add_channel(done):
            listener.subscribe(done, self._on_done)
            listener.on_reconnect(self._done.fire_all)
            await listener.restart(timeout=self.store.connect_timeout)
        return self._done

    def _on_done(self, payload: str) -> None:
        for job_id in finished_ids(payload):
            self._done.fire(job_id)

    # --- schema -------------------------------------------------------------------------
    async def migrate(self, to_version: int | None = None) -> list[int]:
        """Apply pending migrations (under an advisory lock); returns versions applied."""
        return await self.store.schema.migrate(to_version)

    async def schema_version(self) -> int:
        return await self.store.run(self.store.schema.version())

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
            for i, job_id in zip(indexes, ids, strict=True):
                refs[i] = Reference(self, job_id, name)
        return refs  # type: ignore[return-value]

    def push_many_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
        if connection is None and len(jobs) == 1:  # every push_sync and .delay(): no grouping
            queue = jobs[0].queue
            return [Reference(self, self.queue(queue).push_sync(jobs)[0], queue)]
        refs: list[Reference | None] = [None] * len(jobs)
        for name, indexes in self._group_by_queue(jobs).items():
            ids = self.queue(name).push_sync([jobs[i] for i in indexes], connection)
            for i, job_id in zip(indexes, ids, strict=True):
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
