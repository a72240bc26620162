"""The Postgres queue: the default :class:`~chancy.queue.QueuePlugin`.

Each operation is written once as a sequence of statements (``*_steps``) and driven by a
sync or an async connection, so the sync API is a thin twin of the async one."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any, Collection, Mapping, Sequence

import psycopg
from psycopg import errors, pq
from psycopg_pool import AsyncConnectionPool

from chancy.job import Job, JobRecord, JobState, new_job_id, new_job_ids
from chancy.queue import QueuePlugin, Transition, Verdict
from chancy.queues.rate_sql import RateSQL, gate_steps
from chancy.queues.sql import JobSQL, OneInsert, finished_ids
from chancy.store.pg.statements import drive_async, drive_sync, single, Steps
from chancy.rate_limits import RateLimit

#: A waiter re-reads the row this often even without a notification, in case one was
#: missed (e.g. sent while its LISTEN connection was reconnecting).
WAIT_RECHECK_INTERVAL = 10.0
UNIQUE_RETRIES = 5


def push_steps(statements: JobSQL, jobs: Sequence[Job]) -> Steps:
    """Insert jobs; a job whose unique key is taken by a live job gets that job's id.
    Run it in a transaction when ``statements.copyable(jobs)``: it copies, then notifies."""
    fresh = iter(new_job_ids(sum(job.id is None for job in jobs)))
    ids = [job.id or next(fresh) for job in jobs]
    if statements.copyable(jobs):
        yield statements.copy(jobs, ids)
        yield statements.notify_pushed(sorted({job.queue for job in jobs}))
        return ids
    todo = list(range(len(jobs)))
    for _ in range(UNIQUE_RETRIES):
        inserted = yield statements.insert([jobs[i] for i in todo], [ids[i] for i in todo])
        duplicates = [i for i in todo if ids[i] not in inserted]
        if not duplicates:
            return ids
        if any(jobs[i].unique_key is None for i in duplicates):
            raise RuntimeError("job ids collided on insert; pass unique ids or none")
        live = yield statements.live_by_unique_key([jobs[i].unique_key for i in duplicates])
        for i in duplicates:
            if jobs[i].unique_key in live:
                ids[i] = live[jobs[i].unique_key]
        # A live holder that finished between the insert and the lookup frees its key.
        todo = [i for i in duplicates if jobs[i].unique_key not in live]
        if not todo:
            return ids
    raise RuntimeError("unique_key kept changing hands while pushing; try again")


def push_calls_steps(statements: JobSQL, template: Job, calls: Sequence[Sequence[Any]]) -> Steps:
    """COPY one job per call of ``template`` (run it in a transaction), then notify."""
    ids: list[uuid.UUID] = []
    yield statements.copy_calls(template, calls, ids)
    yield statements.notify_pushed([template.queue])
    return ids


def claim_steps(statements: JobSQL, queue: str, worker_id: str, limit: int,
                finished: Sequence[Transition] = (), start: int | None = None) -> Steps:
    """Claim (writing ``finished`` outcomes without follow-ups in the same statement)."""
    records: list[JobRecord] = yield statements.claim(queue, worker_id, limit, finished, start)
    expired = [r.id for r in records if r.state is JobState.EXPIRED]
    if expired:
        yield statements.notify_done(expired)
    return [r for r in records if r.state is JobState.RUNNING]


def write_back_steps(statements: JobSQL, worker_id: str, transitions: Sequence[Transition]) -> Steps:
    """Write outcomes, then the follow-up of each transition that applied (run it in a
    transaction when any transition has one)."""
    applied = yield statements.write_back(worker_id, transitions)
    for transition in transitions:
        if transition.follow_up is not None and transition.job_id in applied:
            yield from transition.follow_up()


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


class Queue(QueuePlugin):
    """A queue whose jobs are rows in the app's Postgres jobs table."""

    @property
    def _sql(self) -> JobSQL:
        return self._app.job_sql

    @property
    def _app(self) -> Any:
        if self.app is None:
            raise RuntimeError(f"Queue {self.name!r} is not attached to a Chancy app")
        return self.app

    async def _run(self, steps: Steps, connection: Any = None, *, atomic: bool = False,
                   pool: AsyncConnectionPool | None = None) -> Any:
        """Drive ``steps`` on ``connection`` or one from ``pool`` (default: the app's);
        ``atomic``: in one transaction (a savepoint inside the caller's)."""
        if connection is None:
            pool = pool or await self._app.store.async_pool()
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
            conn = self._app.store.lease_sync()
            try:
                return self._run_sync(steps, conn, atomic=atomic)
            finally:
                self._app.store.release_sync(conn)
        if not isinstance(connection, psycopg.Connection):
            raise TypeError("pass a psycopg.Connection to the sync API (or await push)")
        if not atomic:
            return drive_sync(connection, steps)
        with connection.transaction():
            return drive_sync(connection, steps)

    async def push(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        return await self._run(push_steps(self._sql, jobs), connection, atomic=self._sql.copyable(jobs))

    def push_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        if connection is None and len(jobs) == 1 and jobs[0].unique_key is None:
            return [self.push_one_sync(jobs[0])]
        return self._run_sync(push_steps(self._sql, jobs), connection, atomic=self._sql.copyable(jobs))

    def push_one_sync(self, job: Job) -> uuid.UUID:
        """One job without a unique key, on a connection of the app's sync pool: the lean
        path of ``.delay()`` and ``task.push_sync()`` (no steps to drive, nothing read back:
        without a unique key the row is inserted or the statement fails)."""
        app = self._app
        job_id = job.id or new_job_id()
        conn = app.store.lease_sync()
        try:
            encoding = "utf-8" if conn.pgconn.parameter_status(b"client_encoding") == b"UTF8" else conn.info.encoding
            insert_one_sync(conn, *self._sql.insert_one(job_id, job, encoding), prepare=not app.behind_pooler)
        finally:
            app.store.release_sync(conn)
        return job_id

    async def push_calls(self, template: Job, calls: Sequence[Sequence[Any]], connection: Any = None) -> list[uuid.UUID]:
        if not self._sql.copyable_calls(template, len(calls)):
            return await super().push_calls(template, calls, connection)
        return await self._run(push_calls_steps(self._sql, template, calls), connection, atomic=True)

    def push_calls_sync(self, template: Job, calls: Sequence[Sequence[Any]], connection: Any = None) -> list[uuid.UUID]:
        if not self._sql.copyable_calls(template, len(calls)):
            return super().push_calls_sync(template, calls, connection)
        return self._run_sync(push_calls_steps(self._sql, template, calls), connection, atomic=True)

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

    async def claim(self, worker_id: str, limit: int, start: int | None = None) -> list[JobRecord]:
        return await self._run(claim_steps(self._sql, self.name, worker_id, limit, (), start),
                               pool=await self._app.store.claim_pool())

    async def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> None:
        steps = write_back_steps(self._sql, worker_id, transitions)
        if all(t.follow_up is None for t in transitions):
            await self._run(steps)
            return
        async with self._app.connection() as conn, conn.transaction():
            await drive_async(conn, steps)

    async def write_back_and_claim(self, worker_id: str, transitions: Sequence[Transition],
                                   limit: int, start: int | None = None) -> list[JobRecord]:
        """In one statement: one round trip and one commit instead of two, and no
        write-back beside the claim that a draining worker waits for."""
        if any(t.follow_up is not None for t in transitions):
            return await super().write_back_and_claim(worker_id, transitions, limit, start)
        return await self._run(claim_steps(self._sql, self.name, worker_id, limit, transitions, start),
                               pool=await self._app.store.claim_pool())

    async def release_unknown(self, worker_id: str, owned: Collection[uuid.UUID], *,
                              previous_life: bool = False) -> list[uuid.UUID]:
        return await self._run(single(self._sql.release_unknown(self.name, worker_id, owned, previous_life)),
                               pool=await self._app.store.claim_pool())

    @functools.cached_property
    def _rate_sql(self) -> RateSQL:
        return RateSQL(self._app.names)

    async def gate(self, worker_id: str, records: Sequence[JobRecord], limits: Mapping[str, RateLimit]) -> Verdict:
        """Counted in the database, so the limit holds across every worker."""
        return await self._run(gate_steps(self._rate_sql, worker_id, records, limits))

    async def wait(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = await self._app.done_waiters()
        with waiters.watch(str(job_id)) as event:
            while True:
                event.clear()
                record = await self.get(job_id)
                if record is None:
                    raise KeyError(f"No job with id {job_id}")
                if record.is_finished:
                    return record
                slice_ = _remaining(deadline, job_id, timeout)
                try:
                    await asyncio.wait_for(event.wait(), slice_)
                except asyncio.TimeoutError:
                    pass

    def wait_sync(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = str(job_id)
        with self._app.store.listening_connection_sync() as conn:
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
                conn.execute("UNLISTEN *")


def _remaining(deadline: float | None, job_id: uuid.UUID, timeout: float | None) -> float:
    if deadline is None:
        return WAIT_RECHECK_INTERVAL
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"Job {job_id} did not finish within {timeout} s")
    return min(remaining, WAIT_RECHECK_INTERVAL)
