"""Bad input gets a clear error and never loses or corrupts a job."""

import time

import pytest

import core_tasks
from chancy import (
    Chancy, ConfigurationError, DatabaseUnavailableError, Job, JobState, Limit, Queue,
    SchemaOutOfDateError, SerializationError, Worker, execution,
)
from chancy.testing import running_worker


async def test_unserialisable_argument_is_named_and_nothing_is_inserted(app):
    with pytest.raises(SerializationError, match=r"kwargs\['conn'\].*core_tasks.echo"):
        await app.push_many([
            Job(core_tasks.echo, args=[1]),
            Job(core_tasks.echo, kwargs={"conn": object()}),
        ])
    async with app.store.connection() as conn:
        assert (await (await conn.execute("SELECT count(*) FROM chancy_jobs")).fetchone())[0] == 0


async def test_unknown_task_fails_clearly_and_can_be_retried_later(app, monkeypatch):
    ref = await app.push(Job("core_tasks.not_deployed_yet", args=[1], max_attempts=3))
    async with running_worker(app):
        record = await ref.wait(timeout=10)
        assert record.state is JobState.FAILED
        assert record.attempts == 1  # not burnt through its retries
        assert "not_deployed_yet" in record.errors[0]["message"]
        assert "UnknownTaskError" in record.errors[0]["type"]
        # "Deploy" the code that registers the task, then retry the job.
        monkeypatch.setitem(execution.registry, "core_tasks.not_deployed_yet", lambda x: x * 10)
        assert await app.requeue(ref) is True
        record = await eventually_succeeded(ref)
    assert record.result == 10


async def eventually_succeeded(ref):
    import asyncio

    for _ in range(200):
        record = await ref.get()
        if record.state is JobState.SUCCEEDED:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"job stayed {record.state}")


async def test_unserialisable_result_fails_the_job(app):
    ref = await app.push(core_tasks.unserialisable_result)
    async with running_worker(app):
        record = await ref.wait(timeout=10)
    assert record.state is JobState.FAILED
    assert "cannot be stored as JSON" in record.errors[0]["message"]


@pytest.mark.parametrize("dsn", ["not a dsn", "mysql://u@h/db", "postgresql://u@h:notaport/db", "host=x port="])
def test_malformed_dsn(dsn):
    with pytest.raises(ConfigurationError, match="not a valid Postgres connection string"):
        Chancy(dsn, plugins=[Queue("default")])


def test_malformed_session_dsn_says_which_setting(dsn, monkeypatch):
    with pytest.raises(ConfigurationError, match="session_dsn.*not a valid Postgres connection string"):
        Chancy(dsn, session_dsn="mysql://u@h/db")
    monkeypatch.setenv("CHANCY_SESSION_DSN", "host=x port=")
    with pytest.raises(ConfigurationError, match="CHANCY_SESSION_DSN.*not a valid"):
        Chancy(dsn)


async def test_unreachable_session_dsn_names_it_and_hides_the_password(dsn):
    app = Chancy(dsn, session_dsn="postgresql://nobody:secret@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(DatabaseUnavailableError, match=r"nobody:\*\*\*@127.0.0.1:1/none") as caught:
        await app.migrate()
    assert "secret" not in str(caught.value)
    await app.close()


async def test_unreachable_database_fails_fast():
    app = Chancy("postgresql://nobody@127.0.0.1:1/none", plugins=[Queue("default")], connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="Cannot connect"):
        await app.push(core_tasks.add, 1, 1)
    assert time.monotonic() - started < 5
    with pytest.raises(DatabaseUnavailableError):
        app.push_sync(core_tasks.add, 1, 1)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Queue("q", concurrency=0), "concurrency must be an integer >= 1"),
        (lambda: Queue("q", executor="fork-bomb"), "unknown executor"),
        (lambda: Queue("q", polling_interval=0), "polling_interval"),
        (lambda: Queue(""), "Queue name"),
        (lambda: Chancy("postgresql://x/y", prefix="jobs; DROP TABLE x"), "prefix"),
        (lambda: Chancy("postgresql://x/y", min_connections=5, max_connections=1), "min_connections"),
        (lambda: Chancy("postgresql://x/y", plugins=[object()]), "not a plugin"),
        (lambda: Chancy("postgresql://x/y", plugins=[Queue("a"), Queue("a")]), "declared twice"),
    ],
)
def test_invalid_options_fail_at_construction(build, message):
    with pytest.raises(ConfigurationError, match=message):
        build()


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: Job(core_tasks.add, max_attempts=0), ValueError),
        (lambda: Job(core_tasks.add, priority="high"), TypeError),
        (lambda: Job(core_tasks.add, args="abc"), TypeError),
        (lambda: Job(core_tasks.add, args=b"abc"), TypeError),
        (lambda: Job(core_tasks.add, args={1, 2}), TypeError),
        (lambda: Job(core_tasks.add, args=5), TypeError),
        (lambda: Job(core_tasks.add, id="not-a-uuid"), ValueError),
        (lambda: Job(lambda: 1), TypeError),
        (lambda: Limit(Limit.Type.TIME, -1), ValueError),
        (lambda: Job(core_tasks.add).with_options(colour="red"), TypeError),
    ],
)
def test_invalid_jobs(build, error):
    with pytest.raises(error):
        build()


def test_job_arguments_and_ids_are_normalised():
    import uuid

    job_id = uuid.uuid4()
    assert Job(core_tasks.add, args=range(2), id=str(job_id)).args == (0, 1)
    assert Job(core_tasks.add, args=[1, 2], id=job_id).id is job_id


def test_worker_rejects_undeclared_queue():
    app = Chancy("postgresql://x/y", plugins=[Queue("default")])
    with pytest.raises(ConfigurationError, match="undeclared queue"):
        Worker(app, queues=["nope"])


async def test_worker_refuses_old_schema(dsn):
    app = Chancy(dsn, plugins=[Queue("default")])
    try:
        with pytest.raises(SchemaOutOfDateError, match="chancy migrate"):
            async with running_worker(app):
                pass
    finally:
        await app.close()
