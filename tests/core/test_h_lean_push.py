"""The lean single-job push (``task.push_sync()``, ``.delay()``): one job, no unique key,
no caller's connection, sent straight through libpq on a pooled connection. It must write
exactly the row the general push writes, announce it, and survive what can happen to a
pooled connection between two pushes."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid

import psycopg
import pytest

from chancy import Backoff, Chancy, Job, JobState, Limit, Queue
from chancy.queues import pg

UTC = datetime.timezone.utc
PLUS_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


def _noop(*args, **kwargs):  # pushed by name only: nothing runs here
    return None


@pytest.fixture
def sync_app(dsn: str):
    app = Chancy(dsn, plugins=[Queue("default")], max_connections=2)
    asyncio.run(app.migrate())
    with app:
        yield app


def _lean_pushes(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """The ids the lean path pushes from now on."""
    pushed: list[uuid.UUID] = []
    real = pg.Queue.push_one_sync

    def counting(self, job):
        pushed.append(real(self, job))
        return pushed[-1]

    monkeypatch.setattr(pg.Queue, "push_one_sync", counting)
    return pushed


def _comparable(record) -> dict:
    fields = dict(record.__dict__)
    for varying in ("id", "created_at"):
        fields.pop(varying)
    if fields["state"] is JobState.PENDING:
        fields.pop("scheduled_at")  # now() of each insert
    return fields


JOBS = [
    Job("h.plain", args=(1, "two", [3.5, None], {"k": True})),
    Job("h.all", args=("é\u2603😀",), kwargs={"at": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                                            "id": uuid.UUID(int=7), "raw": b"\xff\x00"},
        queue="other", priority=-(2**31), max_attempts=2**31 - 1,
        expires_at=datetime.datetime(2090, 5, 6, 7, 8, 9, 123456, tzinfo=PLUS_0530),
        limits=[Limit(Limit.Type.TIME, 2.5), Limit(Limit.Type.MEMORY, 10**9)],
        backoff=Backoff(base=0.5, factor=3.0, maximum=10.0, jitter=False), meta={"celery": {"x": [1]}}),
    Job("h.future", scheduled_at=datetime.datetime(2090, 1, 1, tzinfo=PLUS_0530), priority=True),
    Job("h.past", args=[0], scheduled_at=datetime.datetime(2000, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize("job", JOBS, ids=[job.func for job in JOBS])
def test_a_lean_push_writes_the_row_the_general_push_writes(sync_app: Chancy, job: Job,
                                                            monkeypatch: pytest.MonkeyPatch):
    pushed = _lean_pushes(monkeypatch)
    lean = sync_app.push_sync(job)
    assert pushed == [lean.id]
    with psycopg.connect(sync_app.dsn, autocommit=True) as own:  # the caller's connection: the general path
        general = sync_app.push_many_sync([job], connection=own)[0]
    assert pushed == [lean.id]
    lean_record, general_record = sync_app.get_job_sync(lean), sync_app.get_job_sync(general)
    assert _comparable(lean_record) == _comparable(general_record)
    assert lean_record.state is (JobState.SCHEDULED if job.func == "h.future" else JobState.PENDING)


def test_a_lean_push_is_one_prepared_statement_that_announces_pending_jobs_only(sync_app: Chancy,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    from chancy.store.pg.cursors import PooledConnection

    made: list = []
    real_cursor = PooledConnection.cursor
    monkeypatch.setattr(PooledConnection, "cursor", lambda self, *a, **k: made.append(1) or real_cursor(self, *a, **k))
    pushed = _lean_pushes(monkeypatch)
    with psycopg.connect(sync_app.dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {sync_app.store.jobs.pushed_channel}")
        sync_app.push_sync(Job("h.later").after(3600))
        refs = [sync_app.push_sync(Job("h.now", args=(i,), queue=f"q{i % 2}")) for i in range(7)]
        heard = [n.payload for n in listener.notifies(timeout=30, stop_after=7)]
    assert len(pushed) == 8 and not made  # no cursor, no rows read back
    assert sorted(heard) == ["q0"] * 4 + ["q1"] * 3  # the scheduled one is not announced
    with sync_app.store.connection_sync() as conn:  # max_connections=2 but one was ever needed
        names = conn.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'chancy_insert_%'").fetchall()
    assert len(names) == 2  # a pending and a scheduled job's statements
    assert [sync_app.get_job_sync(ref).args for ref in refs] == [(i,) for i in range(7)]


def test_a_statement_dropped_from_the_session_is_prepared_again(sync_app: Chancy):
    """Someone else's ``DEALLOCATE ALL`` (psycopg runs it on some rollbacks) or ``DISCARD
    ALL`` on the pooled connection: the next push prepares its statement again."""
    refs = [sync_app.push_sync(Job("h.before"))]
    for reset in ("DEALLOCATE ALL", "DISCARD ALL"):
        with sync_app.store.connection_sync() as conn:
            conn.execute(reset)
        refs.append(sync_app.push_sync(Job("h.after", args=(reset,))))
    assert [sync_app.get_job_sync(ref).func for ref in refs] == ["h.before", "h.after", "h.after"]


def test_a_pooled_connection_killed_between_pushes_fails_one_push_clearly_then_is_replaced(sync_app: Chancy):
    first = sync_app.push_sync(Job("h.first"))
    with psycopg.connect(sync_app.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity "  # waits for the exit
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(psycopg.OperationalError):
        sync_app.push_sync(Job("h.lost"))
    after = sync_app.push_sync(Job("h.after"))
    assert sync_app.get_job_sync(first).func == "h.first" and sync_app.get_job_sync(after).func == "h.after"


def test_lean_push_errors_are_psycopgs_and_leave_the_connection_usable(sync_app: Chancy):
    ref = sync_app.push_sync(Job("h.once"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        sync_app.push_sync(Job("h.again", id=ref.id))
    with pytest.raises(UnicodeEncodeError):
        sync_app.push_sync(Job("h.bad", queue="a\udc80"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        Chancy(sync_app.dsn, prefix="nothere_").push_sync(Job("h.nowhere"))
    assert sync_app.get_job_sync(sync_app.push_sync(Job("h.still"))).func == "h.still"


def test_unique_keys_and_transactional_pushes_take_the_general_path(sync_app: Chancy,
                                                                     monkeypatch: pytest.MonkeyPatch):
    pushed = _lean_pushes(monkeypatch)
    first = sync_app.push_sync(Job("h.unique", unique_key="k"))
    assert sync_app.push_sync(Job("h.unique", unique_key="k")) == first
    with psycopg.connect(sync_app.dsn) as own:
        sync_app.push_many_sync([Job("h.rolled_back")], connection=own)
        own.rollback()
    assert pushed == []
    with sync_app.store.connection_sync() as conn:
        funcs = [row[0] for row in conn.execute(f"SELECT func FROM {sync_app.names.prefix}jobs")]
    assert funcs == ["h.unique"]


def test_behind_a_transaction_pooler_lean_pushes_prepare_nothing(pooled_dsn: str, dsn: str):
    from pgbouncer_support import POOL_SIZE

    app = Chancy(pooled_dsn, session_dsn=dsn, plugins=[Queue("default")])
    asyncio.run(app.migrate())
    with app:
        refs = [app.push_sync(Job("h.pooled", args=(i,))) for i in range(20)]  # > psycopg's threshold
        assert [app.get_job_sync(ref).args for ref in refs] == [(i,) for i in range(20)]
    conns = [psycopg.connect(pooled_dsn, prepare_threshold=None) for _ in range(POOL_SIZE)]
    try:
        for conn in conns:
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
    finally:
        for conn in conns:
            conn.close()


# --- the connection kept aside between sync uses (Chancy.lease_sync / release_sync) ---------

def _backends(dsn: str, timeout: float = 30.0) -> int:
    """Other sessions on this test's database, once none is left or ``timeout`` passed (a
    closed connection's server process leaves pg_stat_activity a moment later)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as admin:
        while True:
            count = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def test_the_kept_connection_serves_every_sync_use_of_a_one_connection_pool(dsn: str):
    """With ``max_connections=1`` the connection kept aside after a push is the only one:
    reads, waits, cancels and ``connection_sync`` must get it, not wait on the pool."""
    app = Chancy(dsn, plugins=[Queue("default")], max_connections=1, connect_timeout=15)
    asyncio.run(app.migrate())
    with app:
        ref = app.push_sync(Job("h.one"))
        assert app.get_job_sync(ref).func == "h.one"
        with app.store.connection_sync() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert app.cancel_sync(ref)
        assert app.wait_sync(ref, timeout=30).state is JobState.CANCELLED
        assert app.push_sync(Job("h.two", unique_key="u")).id
    assert _backends(dsn) == 0  # closing the app closed the kept connection too


def test_concurrent_sync_pushes_from_threads_all_land_and_nothing_leaks(dsn: str):
    import concurrent.futures

    app = Chancy(dsn, plugins=[Queue("default")], max_connections=3, connect_timeout=30)
    asyncio.run(app.migrate())
    with app, concurrent.futures.ThreadPoolExecutor(8) as threads:
        refs = list(threads.map(lambda i: app.push_sync(Job("h.threaded", args=(i,))), range(400)))
        assert sorted(app.get_job_sync(ref).args[0] for ref in refs) == list(range(400))
        assert app.store._sync_pool.get_stats()["connections_num"] <= 3
    assert _backends(dsn) == 0


def test_a_connection_left_in_a_transaction_is_not_kept_aside(sync_app: Chancy):
    with sync_app.store.connection_sync() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {sync_app.names.prefix}jobs (id, queue, func) VALUES (gen_random_uuid(), 'q', 'h.x')")
    assert sync_app.store._parked is None  # back to the pool, which rolled the transaction back
    ref = sync_app.push_sync(Job("h.after"))
    with sync_app.store.connection_sync() as conn:
        funcs = [r[0] for r in conn.execute(f"SELECT func FROM {sync_app.names.prefix}jobs")]
    assert funcs == ["h.after"] and sync_app.get_job_sync(ref).func == "h.after"


def test_a_kept_connection_goes_back_to_its_pool_once_it_has_been_out_long_enough(
        sync_app: Chancy, monkeypatch: pytest.MonkeyPatch):
    from chancy.store.pg import store as app_module

    sync_app.push_sync(Job("h.first"))
    assert sync_app.store._parked is not None
    monkeypatch.setattr(app_module, "PARKED_SECONDS", 0.0)
    sync_app.push_sync(Job("h.second"))
    assert sync_app.store._parked is None and sync_app.store._sync_pool.get_stats()["pool_available"] >= 1
