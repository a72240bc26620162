"""The job operations of one Postgres queue, run on its app's connections: what
:class:`chancy.queues.pg.Queue` calls for every operation of the
:class:`~chancy.store.protocol.JobStore` contract.

Each operation is written once as steps (:mod:`chancy.store.pg.jobs`) and driven by a
sync or an async connection, so the sync API is a thin twin of the async one. Workers'
claims go through the store's claim pool (generic plans); a single push without a unique
key takes the lean path (:func:`insert_one_sync`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Collection, Mapping, Sequence

import psycopg
from psycopg import errors, pq
from psycopg_pool import AsyncConnectionPool

from chancy.job import Job, JobRecord, new_job_id
from chancy.store.pg.cursors import AsyncPooledConnection
from chancy.store.pg.jobs import (JobSQL, OneInsert, claim_steps, finished_ids, push_calls_steps, push_steps,
                                  write_back_steps)
from chancy.store.pg.rates import gate_steps
from chancy.store.pg.statements import Steps, drive_async, drive_sync, single

if TYPE_CHECKING:
    from chancy.queue import Transition, Verdict
    from chancy.rate_limits import RateLimit
    from chancy.store.pg.listener import KeyedEvents
    from chancy.store.pg.store import PgStore

#: A waiter re-reads the row this often even without a notification, in case one was
#: missed (e.g. sent while its LISTEN connection was reconnecting).
WAIT_RECHECK_INTERVAL = 10.0


class PgJobStore:
    """The jobs of queue ``name`` in ``store``'s database. ``done_waiters``: the app's
    events of finished jobs, fed by its LISTEN connection (what an async wait waits on)."""

    def __init__(self, store: "PgStore", name: str, done_waiters: Callable[[], Awaitable[KeyedEvents]]) -> None:
        self.store = store
        self.name = name
        self._done_waiters = done_waiters

    @property
    def _sql(self) -> JobSQL:
        return self.store.jobs

    # --- driving steps ------------------------------------------------------------------
    async def _run(self, steps: Steps, connection: Any = None, *, atomic: bool = False,
                   pool: AsyncConnectionPool[AsyncPooledConnection] | None = None) -> Any:
        """Drive ``steps`` on ``connection`` or one from ``pool`` (default: the app's);
        ``atomic``: in one transaction (a savepoint inside the caller's)."""
        if connection is None:
            pool = pool or await self.store.async_pool()
            conn = await pool.getconn()
            try:
                return await self._run(steps, conn, atomic=atomic)
            finally:
                await pool.putconn(conn)
        if not isinstance(connection, psycopg.AsyncConnection):
            raise TypeError("pass a psycopg.AsyncConnection to the async API (or use push_sync)")
        if not atomic:
            return await drive_async(connection, steps)
        async with connection.transaction():
            return await drive_async(connection, steps)

    def _run_sync(self, steps: Steps, connection: Any = None, *, atomic: bool = False) -> Any:
        if connection is None:
            conn = self.store.lease_sync()
            try:
                return self._run_sync(steps, conn, atomic=atomic)
            finally:
                self.store.release_sync(conn)
        if not isinstance(connection, psycopg.Connection):
            raise TypeError("pass a psycopg.Connection to the sync API (or await push)")
        if not atomic:
            return drive_sync(connection, steps)
        with connection.transaction():
            return drive_sync(connection, steps)

    # --- pushing --------------------------------------------------------------------------
    async def push(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        return await self._run(push_steps(self._sql, jobs), connection, atomic=self._sql.copyable(jobs))

    def push_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        return self._run_sync(push_steps(self._sql, jobs), connection, atomic=self._sql.copyable(jobs))

    def push_one_sync(self, job: Job) -> uuid.UUID:
        """One job without a unique key, on a connection of the sync pool: the lean path
        of ``.delay()`` and ``task.push_sync()`` (no steps to drive, nothing read back:
        without a unique key the row is inserted or the statement fails)."""
        job_id = job.id or new_job_id()
        conn = self.store.lease_sync()
        try:
            encoding = "utf-8" if conn.pgconn.parameter_status(b"client_encoding") == b"UTF8" else conn.info.encoding
            insert_one_sync(conn, *self._sql.insert_one(job_id, job, encoding), prepare=not self.store.behind_pooler)
        finally:
            self.store.release_sync(conn)
        return job_id

    def copies_calls(self, template: Job, count: int) -> bool:
        """Whether :meth:`push_calls` can take ``count`` calls of ``template`` (else push
        them as jobs)."""
        return self._sql.copyable_calls(template, count)

    async def push_calls(self, template: Job, calls: Sequence[Sequence[Any]],
                         connection: Any = None) -> list[uuid.UUID]:
        return await self._run(push_calls_steps(self._sql, template, calls), connection, atomic=True)

    def push_calls_sync(self, template: Job, calls: Sequence[Sequence[Any]], connection: Any = None) -> list[uuid.UUID]:
        return self._run_sync(push_calls_steps(self._sql, template, calls), connection, atomic=True)

    # --- reading, cancelling, requeueing ----------------------------------------------------
    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        return await self._run(single(self._sql.get(job_id)))

    def get_sync(self, job_id: uuid.UUID) -> JobRecord | None:
        return self._run_sync(single(self._sql.get(job_id)))

    async def cancel(self, job_id: uuid.UUID) -> bool:
        return await self._run(single(self._sql.cancel(job_id)))

    def cancel_sync(self, job_id: uuid.UUID) -> bool:
        return self._run_sync(single(self._sql.cancel(job_id)))

    async def requeue(self, job_id: uuid.UUID) -> bool:
        return await self._run(single(self._sql.requeue(job_id)))

    def requeue_sync(self, job_id: uuid.UUID) -> bool:
        return self._run_sync(single(self._sql.requeue(job_id)))

    # --- the worker's side --------------------------------------------------------------------
    async def claim(self, worker_id: str, limit: int, start: int | None = None) -> list[JobRecord]:
        return await self._run(claim_steps(self._sql, self.name, worker_id, limit, (), start),
                               pool=await self.store.claim_pool())

    async def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> None:
        """In a transaction when a transition has a follow-up (it commits with its outcome)."""
        atomic = any(t.follow_up is not None for t in transitions)
        await self._run(write_back_steps(self._sql, worker_id, transitions), atomic=atomic)

    async def write_back_and_claim(self, worker_id: str, transitions: Sequence[Transition],
                                   limit: int, start: int | None = None) -> list[JobRecord]:
        """In one statement when no transition has a follow-up: one round trip and one
        commit instead of two, and no write-back beside the claim that a draining worker
        waits for; else the write-back (with its follow-ups), then the claim."""
        if any(t.follow_up is not None for t in transitions):
            await self.write_back(worker_id, transitions)
            transitions = ()
        return await self._run(claim_steps(self._sql, self.name, worker_id, limit, transitions, start),
                               pool=await self.store.claim_pool())

    async def release_unknown(self, worker_id: str, owned: Collection[uuid.UUID], *,
                              previous_life: bool = False) -> list[uuid.UUID]:
        return await self._run(single(self._sql.release_unknown(self.name, worker_id, owned, previous_life)),
                               pool=await self.store.claim_pool())

    async def gate(self, worker_id: str, records: Sequence[JobRecord], limits: Mapping[str, RateLimit]) -> Verdict:
        return await self._run(gate_steps(self.store.rates, worker_id, records, limits))

    # --- waiting ------------------------------------------------------------------------------
    async def wait(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        """Re-read the row whenever the app's LISTEN connection hears the job finished,
        and every :data:`WAIT_RECHECK_INTERVAL` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = await self._done_waiters()
        with waiters.watch(str(job_id)) as event:
            while True:
                event.clear()
                record = await self.get(job_id)
                if record is None:
                    raise KeyError(f"No job with id {job_id}")
                if record.is_finished:
                    return record
                slice_ = _remaining(deadline, job_id, timeout)  # raises TimeoutError: not in the try
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(slice_):
                        await event.wait()

    def wait_sync(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        """LISTENs on a connection of its own meanwhile (UNLISTENed before it goes back)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = str(job_id)
        with self.store.listening_connection_sync() as conn:
            conn.execute(self._sql.listen_done)
            try:
                while True:
                    record = drive_sync(conn, single(self._sql.get(job_id)))
                    if record is None:
                        raise KeyError(f"No job with id {job_id}")
                    if record.is_finished:
                        return record
                    for notify in conn.notifies(timeout=_remaining(deadline, job_id, timeout)):
                        if wanted in finished_ids(notify.payload):
                            break
            finally:
                conn.execute(self._sql.unlisten_all)


def _remaining(deadline: float | None, job_id: uuid.UUID, timeout: float | None) -> float:
    if deadline is None:
        return WAIT_RECHECK_INTERVAL
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"Job {job_id} did not finish within {timeout} s")
    return min(remaining, WAIT_RECHECK_INTERVAL)


#: SQLSTATE of "prepared statement does not exist": someone ran ``DEALLOCATE ALL`` or
#: ``DISCARD ALL`` on the pooled connection (psycopg does on some rollbacks).
_NO_SUCH_STATEMENT = b"26000"


def insert_one_sync(conn: psycopg.Connection, insert: OneInsert, params: list[bytes], prepare: bool) -> None:
    """Run one job's INSERT on a pooled connection straight through libpq: one round trip,
    no cursor, no adaptation and no rows read (psycopg's execute machinery was half a
    single push's client CPU). ``prepare``: as a named prepared statement, prepared on
    this connection the first time (not behind a transaction pooler). libpq waits with
    the GIL released, as psycopg's own wait does."""
    pgconn = conn.pgconn
    with conn.lock:
        if not prepare:
            result = pgconn.exec_params(insert.query, params)
        else:
            prepared = _prepared_names(conn)
            for _ in range(2):
                if insert.name not in prepared:
                    _check(conn, pgconn.prepare(insert.name, insert.query), pq.ExecStatus.COMMAND_OK)
                    prepared.add(insert.name)
                result = pgconn.exec_prepared(insert.name, params)
                if result.status != pq.ExecStatus.FATAL_ERROR \
                        or result.error_field(pq.DiagnosticField.SQLSTATE) != _NO_SUCH_STATEMENT:
                    break
                prepared.discard(insert.name)  # gone from the session: prepare it again
    _check(conn, result, pq.ExecStatus.TUPLES_OK)


def _prepared_names(conn: psycopg.Connection) -> set[bytes]:
    """The statements :func:`insert_one_sync` prepared on this connection (kept on it, so
    they go with it when the pool replaces it)."""
    names: set[bytes] | None = getattr(conn, "_chancy_prepared", None)
    if names is None:
        names = conn._chancy_prepared = set()  # type: ignore[attr-defined]
    return names


def _check(conn: psycopg.Connection, result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    """Raise the error psycopg would raise for ``result``, unless it has the ``expected`` status."""
    if result.status != expected:
        if conn.pgconn.status != pq.ConnStatus.OK:  # a lost connection, as psycopg reports one
            raise psycopg.OperationalError(result.get_error_message(conn.info.encoding))
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
        raise psycopg.InterfaceError(f"unexpected result {pq.ExecStatus(result.status).name} from a job INSERT")
