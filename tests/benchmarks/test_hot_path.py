"""The performance changes made for the benchmarks keep behaviour exactly: the shared JSON
encoder/decoder match kombu's, and every job column survives the binary-array insert and
write-back paths."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import re
import uuid

import psycopg
import pytest
from psycopg import _queries as psycopg_queries
from psycopg import sql
from kombu.utils import json as kombu_json

from chancy import Backoff, Chancy, Job, JobState, Limit, Queue
from chancy import serialization
from chancy.errors import SerializationError
from chancy.migrations import Names
from chancy.queue import Transition
from chancy.store.pg.celery_transport import TransportSQL
from chancy.store.pg.jobs import COPY_MIN_JOBS, JobSQL
from chancy.store.pg.rates import RateSQL

VALUES = [
    [1, "a", {"x": 2.5, "y": None}], {}, [], "é\u2603", None, True,
    {"at": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
     "day": datetime.date(2026, 1, 2), "id": uuid.UUID(int=7), "amount": decimal.Decimal("1.10"),
     "raw": b"\xff\x00", "text": b"plain"},
]


@pytest.mark.parametrize("value", VALUES)
def test_serialization_matches_kombu(value):
    text = serialization.dumps(value)
    assert text == kombu_json.dumps(value)
    assert serialization.loads(text) == kombu_json.loads(text)
    assert serialization.loads(text.encode()) == kombu_json.loads(text)


@pytest.mark.parametrize("text", [" [1] ", "{\"a\": 1}\n", "[1] x", "", "[1", "\"\\u00e9\""])
def test_loads_without_the_whitespace_scans_decodes_and_fails_as_kombu_does(text):
    """``loads`` skips the decoder's whitespace scans for column text; anything else still
    goes through the full decode, its errors included."""
    try:
        expected = kombu_json.loads(text)
    except ValueError as exc:
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            serialization.loads(text)
    else:
        assert serialization.loads(text) == expected


def test_the_reused_encoder_recovers_from_a_failed_encode():
    """``dumps`` reuses one C encoder per thread; a failure part-way (inside nested
    containers) must not leave it believing those containers are still being encoded."""
    outer = [[1, {"k": [2]}], object()]
    with pytest.raises(TypeError):
        serialization.dumps(outer)
    outer[1] = 2  # the same containers again, now encodable
    assert serialization.dumps(outer) == kombu_json.dumps(outer)
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        serialization.dumps(circular)


def test_loads_fast_path_returns_fresh_containers():
    first = serialization.loads("[]")
    first.append(1)
    assert serialization.loads("[]") == [] and serialization.loads("{}") == {}


def rich_job(unique_key: str) -> Job:
    later = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    return Job("tests.somewhere.task", args=(1, "two", VALUES[-1]), kwargs={"k": [None]}, priority=2**31 - 1,
               max_attempts=3, scheduled_at=later, expires_at=later + datetime.timedelta(days=1),
               unique_key=unique_key, limits=(Limit(Limit.Type.TIME, 1.5),),
               backoff=Backoff(base=2.0, jitter=False), meta={"celery": {"root_id": "r"}})


def stored_fields(record) -> tuple:
    return (record.args, record.kwargs, record.priority, record.max_attempts, record.scheduled_at,
            record.expires_at, record.limits, record.backoff, record.meta, record.state)


async def test_a_single_push_stores_what_a_bulk_push_stores(dsn):
    """One job goes through the scalar insert, several through the array one."""
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        job = rich_job("u-1")
        alone = await app.push(job)
        in_bulk, _ = await app.push_many([job.with_options(unique_key="u-2"), Job("tests.somewhere.task")])
        one, many = await alone.get(), await in_bulk.get()
        assert stored_fields(one) == stored_fields(many)
        assert (one.unique_key, many.unique_key) == ("u-1", "u-2")
        assert await app.push(job) == alone  # the unique key still deduplicates a single push


async def test_every_column_survives_the_binary_insert_and_write_back(dsn):
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        job = rich_job("u-1")
        later, expires = job.scheduled_at, job.expires_at
        plain = Job("tests.somewhere.task")
        ref, plain_ref = await app.push_many([job, plain])
        stored = await ref.get()
        assert (stored.args, stored.kwargs, stored.priority, stored.max_attempts) == \
            (job.args, job.kwargs, job.priority, job.max_attempts)
        assert (stored.scheduled_at, stored.expires_at, stored.unique_key) == (later, expires, "u-1")
        assert (stored.limits, stored.backoff, stored.meta) == (job.limits, job.backoff, job.meta)
        assert (await plain_ref.get()).state is JobState.PENDING

        queue = app.queues["default"]
        claimed = await queue.claim("w1", 10)
        assert {r.id for r in claimed} == {ref.id, plain_ref.id}
        error = {"type": "ValueError", "message": "no", "traceback": "tb", "at": "now"}
        await queue.write_back("w1", [
            Transition(ref.id, JobState.RETRYING, error=error, delay=60.0, max_attempts=5),
            Transition(plain_ref.id, JobState.SUCCEEDED, result_json=serialization.dumps({"r": [1]})),
        ])
        retrying, done = await ref.get(), await plain_ref.get()
        assert retrying.state is JobState.RETRYING and retrying.max_attempts == 5
        assert retrying.errors[0]["message"] == "no" and retrying.scheduled_at > later
        assert done.state is JobState.SUCCEEDED and done.result == {"r": [1]}


async def test_bulk_push_by_copy_is_atomic_and_wakes_workers(dsn):
    """A large plain push_many goes through COPY + one notification per queue."""

    async with Chancy(dsn, plugins=[Queue("default"), Queue("other")]) as app:
        await app.migrate()
        jobs = [Job("tests.somewhere.task", args=(i,), queue=("default", "other")[i % 2]) for i in range(COPY_MIN_JOBS)]
        assert app.store.jobs.copyable(jobs)
        async with app.store.connection() as conn:
            await conn.execute(f"LISTEN {app.store.jobs.pushed_channel}")
            refs = await app.push_many(jobs)
            heard = {notify.payload async for notify in conn.notifies(timeout=5, stop_after=2)}
        assert heard == {"default", "other"}
        stored = await app.get_job(refs[-1])
        assert stored.state is JobState.PENDING and stored.args == (COPY_MIN_JOBS - 1,)
        assert stored.queue == "other" and stored.scheduled_at is not None

        async with app.store.connection() as conn:
            with pytest.raises(psycopg.errors.UniqueViolation):  # as the INSERT path does
                async with conn.transaction():
                    await app.push_many(jobs[:-1] + [Job("x", id=refs[0].id)], connection=conn)
        # The failed COPY left nothing behind: still exactly one job per original push.
        async with app.store.connection() as conn:
            count = (await (await conn.execute("SELECT count(*) FROM chancy_jobs")).fetchone())[0]
        assert count == COPY_MIN_JOBS


async def test_bulk_push_with_a_unique_key_or_a_schedule_keeps_the_insert_path(dsn):

    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        first = await app.push(Job("tests.somewhere.task", unique_key="k"))
        jobs = [Job("tests.somewhere.task") for _ in range(COPY_MIN_JOBS - 1)] + [Job("tests.somewhere.task", unique_key="k")]
        assert not app.store.jobs.copyable(jobs)
        refs = await app.push_many(jobs)
        assert refs[-1] == first
        later = [Job("tests.somewhere.task").after(3600) for _ in range(COPY_MIN_JOBS)]
        assert not app.store.jobs.copyable(later)
        assert (await app.get_job((await app.push_many(later))[0])).state is JobState.SCHEDULED


async def test_a_worker_listens_for_completions_only_once_someone_waits(dsn):
    """Otherwise every finished job is a notification to its own worker."""
    import asyncio

    from chancy.testing import running_worker

    async with Chancy(dsn, plugins=[Queue("default", concurrency=5)]) as app:
        await app.migrate()
        app.task(_double)
        async with running_worker(app):
            listener = await app.listener()
            assert app.store.jobs.done_channel not in listener._channels
            refs = [await app.push(Job(_double, args=(i,))) for i in range(1, 5)]
            results = await asyncio.gather(*(ref.wait(timeout=10) for ref in refs))
            assert [r.result for r in results] == [2, 4, 6, 8]
            assert app.store.jobs.done_channel in listener._channels


async def _double(x: int) -> int:
    return 2 * x


class CountingCursor(psycopg.Cursor):
    """Counts the statements its connection sends (each ``execute`` is one round trip)."""

    def execute(self, query, params=None, **kwargs):
        self.connection.sent.append(query if isinstance(query, (bytes, str)) else query.as_bytes(self))
        return super().execute(query, params, **kwargs)


def _counting(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True, cursor_factory=CountingCursor)
    conn.sent = []
    return conn


async def test_a_push_is_one_prepared_round_trip_that_inserts_and_announces(dsn):
    """Insert and NOTIFY are one statement; psycopg prepares it once it repeats."""
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        task = app.task(_double)
        with _counting(dsn) as conn, psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {app.store.jobs.pushed_channel}")
            refs = [app.push_many_sync([task.job(i)], connection=conn)[0] for i in range(8)]
            assert len(conn.sent) == 8 and len(set(conn.sent)) == 1
            assert b"pg_notify" in conn.sent[0] and b"WITH" not in conn.sent[0]
            heard = list(listener.notifies(timeout=5, stop_after=1))
            assert heard and heard[0].payload == "default"
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO%'")
            assert prepared.fetchone()[0] == 1
        assert [(await ref.get()).args for ref in refs] == [(i,) for i in range(8)]


def _cursors_made(patch: pytest.MonkeyPatch, connection_class: type) -> list:
    """The cursors ``connection_class`` makes from now on (until ``patch`` is undone)."""
    made: list = []
    real_cursor = connection_class.cursor

    def counting_cursor(self, *args, **kwargs):
        made.append(real_cursor(self, *args, **kwargs))
        return made[-1]

    patch.setattr(connection_class, "cursor", counting_cursor)
    return made


def test_pushes_through_the_pool_reuse_one_cursor_per_connection(dsn):
    """A fresh cursor per statement looked up its dumpers and loaders again (~12 µs of a
    single push's client CPU); a pooled connection keeps one. A caller's own connection
    gets a fresh cursor each time and nothing is kept on it. (Pushes with a unique key: a
    plain single push takes no cursor at all, see tests/core/test_h_lean_push.py.)"""
    from chancy.store.pg.cursors import PooledConnection

    app = Chancy(dsn, plugins=[Queue("default")], max_connections=1)
    asyncio.run(app.migrate())
    task = app.task(_double)
    with app, pytest.MonkeyPatch.context() as patch:
        made = _cursors_made(patch, PooledConnection)
        refs = [app.push_sync(task.job(i).with_options(unique_key=f"k{i}")) for i in range(5)]
        assert len(made) == 1
        with psycopg.connect(dsn, autocommit=True) as own:
            app.push_many_sync([task.job(9)], connection=own)
            assert not isinstance(own, PooledConnection) and len(made) == 1
        made[0].close()  # a closed kept cursor is replaced, not used
        refs.append(app.push_sync(task.job(5).with_options(unique_key="k5")))
        assert len(made) == 2
        assert [app.get_job_sync(ref).args for ref in refs] == [(i,) for i in range(6)]


async def test_async_pushes_and_claims_reuse_their_pooled_connections_cursor(dsn):
    from chancy.store.pg.cursors import AsyncPooledConnection

    async with Chancy(dsn, plugins=[Queue("default")], max_connections=1) as app:
        await app.migrate()
        task = app.task(_double)
        with pytest.MonkeyPatch.context() as patch:
            made = _cursors_made(patch, AsyncPooledConnection)
            refs = [await task.push(i) for i in range(3)]
            assert len(made) == 1
            claimed = await app.queues["default"].claim("w1", 10)
            assert sorted(r.args for r in claimed) == [(0,), (1,), (2,)]
            opened = len(made)  # the claim pool's connection: its setup and its kept cursor
            claimed = await app.queues["default"].claim("w1", 10)
            assert claimed == [] and len(made) == opened
        assert {(await ref.get()).state for ref in refs} == {JobState.RUNNING}


def test_a_push_sends_only_the_columns_its_job_sets(dsn):
    """Defaults are the table's: a plain call sends id, queue, func and args."""
    from chancy.job import new_job_id

    app = Chancy(dsn)
    task = app.task(_double)
    plain = app.store.jobs.insert([task.job(1)], [new_job_id()])
    assert set(plain.params) == {"id", "queue", "func", "args"}
    assert b"ON CONFLICT" not in plain.query and b"CASE WHEN scheduled_at" not in plain.query
    unique = app.store.jobs.insert([task.job(1).with_options(unique_key="k", priority=2)], [new_job_id()])
    assert set(unique.params) == {"id", "queue", "func", "args", "priority", "unique_key"}
    assert b"ON CONFLICT" in unique.query


def test_task_jobs_share_no_mutable_state_with_the_task_defaults():
    app = Chancy("postgresql://nowhere/db")
    task = app.task(_double)
    job = task.job(1, k=2)
    assert job == Job(task.name, args=(1,), kwargs={"k": 2})
    job.meta["x"] = 1
    assert task.defaults.meta == {} and task.job(1).meta == {}


def _celery(dsn: str):
    from chancy.compat import Celery

    celery = Celery("hot_path", broker=dsn, set_as_current=False)
    task = celery.task(name="tests.hot_path.add")(_add)
    return celery, task


def _add(x: int, y: int = 0) -> int:
    return x + y


async def test_delay_of_a_plain_task_stores_what_the_canvas_planner_would(dsn):
    """``publish`` skips the planner for one task with nothing linked; the row must be
    the same as the planner's (the planner still handles anything wired)."""
    from chancy.compat.job_rows import Planner

    celery, task = _celery(dsn)
    await celery.chancy.migrate()
    try:
        sig = task.s(1, y=2).set(priority=3, countdown=60, headers={"h": 1})
        planner = Planner(celery)
        sig.plan(planner, parked=False)
        planned = planner.planned_jobs()[0]
        result = sig.apply_async(task_id=planned.meta["celery"].get("task_id") or str(planned.id))
        stored = celery.chancy.get_job_sync(planned.id)
        assert result.id == str(planned.id)
        assert (stored.func, stored.args, stored.kwargs, stored.priority, stored.max_attempts, stored.limits) == \
            (planned.func, planned.args, planned.kwargs, planned.priority, planned.max_attempts, planned.limits)
        assert stored.meta == planned.meta and stored.state is JobState.SCHEDULED
    finally:
        celery.close()
        await celery.chancy.close()


def test_delay_inspects_signatures_and_routes_once(dsn, monkeypatch):
    import inspect

    from chancy.compat import routes
    from chancy.compat.job_rows import job_for

    celery, task = _celery(dsn)
    celery.conf.task_routes = [lambda name, args, kwargs, options: {"queue": "q"} if args == (7,) else None]
    calls = {"signature": 0, "prepare": 0}
    signature, prepare = inspect.signature, routes.prepare

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(inspect, "signature", counted("signature", signature))
    monkeypatch.setattr(routes, "prepare", counted("prepare", prepare))
    celery.conf.task_always_eager = False
    jobs = [job_for(celery, task.s(i)) for i in (1, 7, 2)]
    assert [job.queue for job in jobs] == ["celery", "q", "celery"]
    assert calls["prepare"] == 1 and calls["signature"] <= 2  # run's, and the router's
    with pytest.raises(TypeError, match="wrong arguments"):
        job_for(celery, task.s(1, 2, 3))
    celery.conf.task_routes = {"tests.hot_path.add": "other"}  # a new value is prepared anew
    assert job_for(celery, task.s(1)).queue == "other"
    celery.close()
async def test_the_row_mapping_sets_every_field_as_the_dataclass_would(dsn):
    """``record_from_row`` skips the generated ``__init__``; it must still set every field."""
    import dataclasses

    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        ref = await app.push(rich_job("u-1"))
        stored = await ref.get()
    assert set(vars(stored)) == {field.name for field in dataclasses.fields(stored)}
    assert stored == type(stored)(**vars(stored)) and isinstance(stored.state, JobState)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.priority = 1


def _asyncio_executor(concurrency: int = 1):
    from chancy.executors.asyncio import AsyncExecutor
    from chancy.store.memory import MemoryQueue

    return AsyncExecutor(MemoryQueue("test", concurrency=concurrency))


def _running(func, *args) -> "JobRecord":
    from chancy.job import JobRecord, new_job_id, task_name

    now = datetime.datetime.now(datetime.timezone.utc)
    return JobRecord(id=new_job_id(), queue="test", func=task_name(func), args=args, kwargs={}, priority=0,
                     state=JobState.RUNNING, attempts=1, max_attempts=1, scheduled_at=now, expires_at=None,
                     created_at=now, started_at=now, completed_at=None, taken_by="test", unique_key=None,
                     limits=(), backoff=None, meta={}, result=None, errors=[])


async def test_the_asyncio_executor_reports_a_job_from_its_own_task_step():
    """No done callback per job: a coroutine that returns at once is reported, and its slot
    freed, in the loop iteration that runs it (one more iteration per job cost ~1.5 µs)."""
    import asyncio

    executor = _asyncio_executor(concurrency=2)
    outcomes = []
    executor.submit(_running(_double, 2), outcomes.append)
    executor.submit(_running(_double, 3), outcomes.append)
    await asyncio.sleep(0)  # runs both tasks' first (and only) step
    assert [o.result_json for o in outcomes] == ["4", "6"]
    assert executor.free_slots == 2
    await executor.stop(0)


async def test_a_job_cancelled_before_its_task_starts_frees_its_slot():
    """Its coroutine never runs, so only the cancel path can end its slot."""
    import asyncio

    executor = _asyncio_executor()
    outcomes = []
    record = _running(_double, 2)
    executor.submit(record, outcomes.append)
    assert executor.cancel(record.id)
    assert len(outcomes) == 1 and outcomes[0].cancelled
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert executor.free_slots == 1 and len(outcomes) == 1
    executor.submit(record, outcomes.append)  # its id is free again
    await executor.stop(None)
    assert outcomes[1].result_json == "4"


async def _doubles_heard_of(app: Chancy, dsn: str, count: int) -> tuple[list, psycopg.AsyncConnection]:
    """``count`` pushed jobs of ``_double``, and a connection listening for completions."""
    await app.migrate()
    app.task(_double)
    refs = await app.push_many([Job(_double, args=(i,)) for i in range(count)])
    listening = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listening.execute(app.store.jobs.listen_done)
    return refs, listening


async def test_a_draining_worker_writes_outcomes_in_its_next_claims_transaction(dsn):
    """Claims take every free slot (10 at a time here, without prefetch), and the outcomes
    that freed them are written in the same transaction as the next claim: a write-back's
    completed_at is the started_at of the batch claimed with it (both are that
    transaction's now()). Only the last batch is left for the flush loop. Waiters still
    hear of every finished job."""
    from chancy.testing import eventually, running_worker

    async with Chancy(dsn, plugins=[Queue("default", concurrency=10)]) as app:
        refs, listening = await _doubles_heard_of(app, dsn, 100)
        async with running_worker(app, writeback_delay=0.5, prefetch_multiplier=1):
            async with app.store.connection() as conn:
                async def drained() -> bool:
                    cur = await conn.execute("SELECT count(*) FROM chancy_jobs WHERE state <> 'succeeded'")
                    return (await cur.fetchone())[0] == 0
                await eventually(drained, timeout=20)
                claims = await (await conn.execute(
                    "SELECT count(*) FROM chancy_jobs GROUP BY started_at ORDER BY started_at")).fetchall()
                write_backs = await (await conn.execute(
                    "SELECT count(*), completed_at IN (SELECT started_at FROM chancy_jobs) FROM chancy_jobs"
                    " GROUP BY completed_at ORDER BY completed_at")).fetchall()
        heard = [n.payload.split(",") async for n in listening.notifies(timeout=5, stop_after=10)]
        await listening.close()
    assert [n for n, in claims] == [10] * 10
    assert write_backs == [(10, True)] * 9 + [(10, False)]
    # Each write-back announced its batch in one notification.
    assert [len(ids) for ids in heard] == [10] * 10
    assert {job_id for ids in heard for job_id in ids} == {str(ref.id) for ref in refs}


async def test_outcomes_of_a_failed_write_back_and_claim_are_written_later():
    """The claim and the write-back fail together; the outcomes go back to the flush loop."""
    from chancy.store.memory import MemoryQueue
    from chancy.testing import running_worker

    class Flaky(MemoryQueue):
        failures = 0

        async def write_back_and_claim(self, worker_id, transitions, limit, start=None):
            if transitions and not self.failures:
                self.failures += 1
                raise ConnectionError("the database went away")
            return await super().write_back_and_claim(worker_id, transitions, limit, start)

    queue = Flaky("default", concurrency=2)
    app = Chancy(plugins=[queue])
    app.task(_double)
    refs = [await app.push(Job(_double, args=(i,))) for i in range(6)]
    async with running_worker(app):
        records = [await ref.wait(timeout=10) for ref in refs]
    assert queue.failures == 1
    assert [(r.state, r.result, r.attempts) for r in records] == [(JobState.SUCCEEDED, 2 * i, 1) for i in range(6)]


def test_bulk_ids_are_time_ordered_unique_uuid7s():
    from chancy.job import new_job_id, new_job_ids

    ids = [new_job_id()] + new_job_ids(10_000) + [new_job_id()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(i == uuid.UUID(str(i)) and hash(i) == hash(uuid.UUID(str(i))) for i in ids[:100])


async def test_task_push_many_copies_calls_atomically_and_announces_them(dsn):
    """The bulk API: one COPY (rows made as they are sent) and one NOTIFY per queue, in
    one transaction; it joins the caller's; odd characters survive the text format."""

    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        task = app.task(_double, queue="odd\tqueue\\", priority=3)
        calls = [(i, "tab\tnew\nline\\back\r") for i in range(COPY_MIN_JOBS + 1)]
        async with app.store.connection() as conn:
            await conn.execute(f"LISTEN {app.store.jobs.pushed_channel}")
            refs = await task.push_many(iter(calls))
            heard = [notify.payload async for notify in conn.notifies(timeout=5, stop_after=1)]
        assert heard == ["odd\tqueue\\"]
        stored = await refs[-1].get()
        assert (stored.args, stored.queue, stored.priority, stored.state) == \
            (calls[-1], "odd\tqueue\\", 3, JobState.PENDING)
        assert [r.id for r in refs] == sorted(r.id for r in refs)

        async with app.store.connection() as conn:  # in the caller's transaction: rolled back with it
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await task.push_many(calls, connection=conn)
                    raise RuntimeError("caller gives up")
            with pytest.raises(SerializationError, match=r"args\[0\]"):
                await task.push_many(calls[:-1] + [(object(),)])  # named, and nothing kept
            with pytest.raises(TypeError, match="list or tuple"):
                await task.push_many(calls[:-1] + ["ab"])
            count = (await (await conn.execute("SELECT count(*) FROM chancy_jobs")).fetchone())[0]
        assert count == len(calls)
        few = task.push_many_sync([(1,), (2,)])  # below the COPY size: the insert path
        assert [r.get_sync().args for r in few] == [(1,), (2,)]


async def test_push_many_of_jobs_copies_text_that_needs_escaping(dsn):

    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        jobs = [Job("tests.some\\where.task", args=("a\tb\nc\\d\re", i), kwargs={"k": "\\"}, max_attempts=2,
                    queue="q\n", meta={"m": "\t"}) for i in range(COPY_MIN_JOBS)]
        assert app.store.jobs.copyable(jobs)
        stored = await (await app.push_many(jobs))[-1].get()
        assert (stored.func, stored.args, stored.kwargs, stored.queue, stored.meta, stored.max_attempts) == \
            (jobs[-1].func, jobs[-1].args, {"k": "\\"}, "q\n", {"m": "\t"}, 2)


async def skew_statistics(conn: psycopg.AsyncConnection, queue: str) -> None:
    """As many finished rows as future-scheduled ones in ``queue``, analyzed."""
    await conn.execute(
        "INSERT INTO chancy_jobs (id, queue, func, state, completed_at, scheduled_at)"
        " SELECT gen_random_uuid(), %s, 'f', 'succeeded', now(), now() - interval '1 hour'"
        " FROM generate_series(1, 2000)", (queue,))
    await conn.execute(
        "INSERT INTO chancy_jobs (id, queue, func, state, scheduled_at)"
        " SELECT gen_random_uuid(), %s, 'f', 'scheduled', now() + interval '1 day'"
        " FROM generate_series(1, 2000)", (queue,))
    await conn.execute("ANALYZE chancy_jobs")

CLAIM_PLANS = ("SELECT generic_plans, custom_plans FROM pg_prepared_statements"
               " WHERE statement LIKE '%%FOR UPDATE SKIP LOCKED%%'")


async def test_claims_beside_many_scheduled_rows_are_not_planned_again_each_time(dsn):
    """With as many future-scheduled as finished rows, the claim's generic plan looks
    costlier than its custom ones, so Postgres planned every claim anew (~0.5 ms each).
    Claims run where the generic plan is always used; the shared pool keeps the default,
    which partial indexes need."""
    async with Chancy(dsn, plugins=[Queue("default")]) as app:
        await app.migrate()
        async with app.store.connection() as conn:
            await skew_statistics(conn, "default")
            assert (await (await conn.execute("SHOW plan_cache_mode")).fetchone())[0] == "auto"
        await app.push_many([Job("f") for _ in range(12)])
        queue = app.queues["default"]
        for _ in range(12):
            assert len(await queue.claim("w", 1)) == 1
        async with (await app.store.claim_pool()).connection() as conn:
            plans = await (await conn.execute(CLAIM_PLANS)).fetchall()
    assert len(plans) == 1 and plans[0][0] > 0 and plans[0][1] == 0


async def test_the_kombu_transport_claims_with_the_generic_plan_too(dsn):
    from kombu import Connection

    import chancy.compat.kombu  # noqa: F401

    async with Chancy(dsn, plugins=[Queue("celery")]) as app:
        await app.migrate()
        async with app.store.connection() as conn:
            await skew_statistics(conn, "celery")
        await app.push_many([Job("f", queue="celery") for _ in range(12)])
    with Connection("chancy+" + dsn) as conn:
        for _ in range(12):
            assert conn.default_channel.basic_get("celery", no_ack=True) is not None
        plans = conn.transport.database.connection().execute(CLAIM_PLANS).fetchall()
    assert len(plans) == 1 and plans[0][0] > 0 and plans[0][1] == 0


@pytest.mark.parametrize("meta", [{}, {"celery": {"callbacks": None, "chain": [], "errbacks": None}}])
def test_a_job_without_callbacks_does_not_decode_its_result_for_the_celery_hook(meta, monkeypatch):
    """The compat completion hook runs for every finished job of a worker that imported
    chancy.compat; without callbacks or a chain it has nothing to pass the result to."""
    import dataclasses

    from chancy.compat import embed

    record = dataclasses.replace(_running(_double, 1), meta=meta)

    def no_decoding(text):
        raise AssertionError(f"decoded {text!r}")
    monkeypatch.setattr(serialization, "loads", no_decoding)
    assert embed.next_jobs(record, Transition(record.id, JobState.SUCCEEDED, result_json='{"big": 1}')) == []


#: Statements longer than psycopg's parse cache that no hot path sends: the transport's
#: store of a message whose id is taken (a retry, a repeat) or that replaces a task
#: (every message under a new id is stored by ``_store_new``, see the test below); the
#: keyed claim key by key (4.9 KB), sent only by a fair queue's claims and after a keyed
#: claim whose front was full keys: its parse is per claim (up to 100 jobs), not per job.
RARE_PATH = {TransportSQL: {"_store"}, JobSQL: {"claim_keyed_heads"}}
#: Parts of statements assembled at run time (the INSERT of the columns a push sets).
ASSEMBLED = {JobSQL: {"insert_values", "insert_unnest", "insert_scheduled_at", "insert_scheduled_state",
                      "insert_returning", "copy", "listen_done"}}


@pytest.mark.parametrize("statements", [JobSQL, TransportSQL, RateSQL])
def test_statements_are_composed_once_and_short_enough_for_psycopgs_parse_cache(statements):
    """psycopg composes a ``sql.Composable`` again at every execute (escaping each
    identifier) and parses any statement longer than its cache limit (4 KB) every time;
    the write-back-and-claim statement was 4.6 KB. Together ~9% of a draining worker's
    samples. (The transport's store grew to 5.7 KB: 170 us of parsing per publish.)"""
    limit = getattr(psycopg_queries, "MAX_CACHED_STATEMENT_LENGTH", 4096)
    made = statements(Names("chancy_"))
    queries = {name: value for name, value in vars(made).items() if isinstance(value, (bytes, sql.Composed))}
    file = getattr(made, "statements", None)  # the statements of its sql/*.sql file
    if file is not None:
        queries |= {name: file[name] for name in file.names() if name not in ASSEMBLED.get(statements, ())}
    assert len(queries) >= 2
    for name, query in queries.items():
        assert isinstance(query, bytes), f"{name} is composed at every execute"
        if name not in RARE_PATH.get(statements, ()):
            assert len(query) <= limit, f"{name} ({len(query)} bytes) is parsed at every execute"


def test_a_celery_message_under_a_new_id_is_stored_by_the_short_statement():
    transport = TransportSQL(Names("chancy_"))
    job = Job("proj.add", args=[1], meta={"celery": {"task_id": "t-1"}}).with_options(id=uuid.uuid4())
    fresh = transport.store(job, 1, None)
    first = next(fresh)
    assert first.query is transport._store_new
    with pytest.raises(StopIteration) as done:
        fresh.send(first.mapper([("pending", None, False, False, None, None)]))
    assert done.value.value.stored
    taken = transport.store(job, 1, None)
    first = next(taken)
    assert taken.send(first.mapper([])).query is transport._store  # the id was taken: the full rules
    replacing = transport.store(job.with_options(meta={"celery": {"task_id": "t-1", "replaced_task_nesting": 1}}),
                                1, None)
    assert next(replacing).query is transport._store


async def test_a_write_back_announces_its_batch_in_notifications_of_at_most_100_ids(dsn):
    """One notification per finished job cost every listening process a callback per job;
    a batch is announced at once, split so that a payload stays under Postgres' 8,000
    bytes. Waiters parked before the jobs ran wake on those notifications (their recheck
    interval is 10 s), async and sync alike."""
    from chancy.testing import running_worker

    async with Chancy(dsn, plugins=[Queue("default", concurrency=250)]) as app:
        refs, listening = await _doubles_heard_of(app, dsn, 250)
        queue = app.queues["default"]
        waits = [asyncio.create_task(asyncio.wait_for(ref.wait(), 5)) for ref in (refs[0], refs[150], refs[-1])]
        waits.append(asyncio.create_task(asyncio.to_thread(queue.wait_sync, refs[199].id, 5)))
        await asyncio.sleep(0.5)  # every waiter has read its job as pending and listens
        async with running_worker(app):
            finished = await asyncio.gather(*waits)
        heard = [n.payload.split(",") async for n in listening.notifies(timeout=5, stop_after=3)]
        await listening.close()
    assert all(record.state is JobState.SUCCEEDED for record in finished)
    assert sorted(len(ids) for ids in heard) == [50, 100, 100]
    assert {job_id for ids in heard for job_id in ids} == {str(ref.id) for ref in refs}
