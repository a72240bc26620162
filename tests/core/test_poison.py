"""Poison: no outcome, stored row or write-back refusal may block a queue or strand a job.
Each job beside the poison one must still run, under every executor."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

import poison_tasks
from chancy import Job, JobState, Queue
from chancy.execution import Outcome
from chancy.testing import running_worker

EXECUTORS = ["asyncio", "thread", "process", "solo"]


@pytest.fixture
def make_app(make_app):
    """Apps whose workers may run this module's plain task functions."""
    return lambda *queues: make_app(*queues, allowed_imports=["poison_tasks"])


@pytest.fixture
async def app(make_app):
    return await make_app()


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", ["nan", "infinity", "nul", "surrogate", "nested_nan"])
async def test_an_unstorable_result_fails_its_job_and_the_queue_runs_on(make_app, executor, kind):
    app = await make_app(Queue("default", concurrency=1, executor=executor))
    poison = await app.push(Job(poison_tasks.returns, args=[kind], max_attempts=3))
    after = await app.push(poison_tasks.ok, "next")
    async with running_worker(app):
        failed = await poison.wait(timeout=30)
        assert (await after.wait(timeout=30)).result == "next"
    assert failed.state is JobState.FAILED
    assert failed.attempts == 1  # rerunning would return the same value: no retry
    assert failed.errors[-1]["type"] == "chancy.errors.ResultNotStorableError"
    assert "cannot be stored" in failed.errors[-1]["message"]


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", ["nul", "surrogate", "unprintable"])
async def test_an_exception_whose_message_postgres_refuses_is_recorded(make_app, executor, kind):
    app = await make_app(Queue("default", concurrency=1, executor=executor))
    poison = await app.push(poison_tasks.raises, kind)
    after = await app.push(poison_tasks.ok, "next")
    async with running_worker(app):
        failed = await poison.wait(timeout=30)
        assert (await after.wait(timeout=30)).result == "next"
    assert failed.state is JobState.FAILED
    error = failed.errors[-1]
    assert error["type"].endswith(("ValueError", "Unprintable"))
    if kind != "unprintable":
        assert error["message"].startswith("bad\\") and error["message"].endswith("message")


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_row_the_worker_cannot_decode_fails_alone(make_app, dsn, executor):
    """Arguments nested past the decoder's limit (written by another producer) fail
    their job with a clear error; the jobs claimed in the same batch run."""
    app = await make_app(Queue("default", concurrency=4, executor=executor))
    refs = await app.push_many([Job(poison_tasks.ok, args=[i]) for i in range(4)])
    deep = "[" * 5000 + "]" * 5000
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("UPDATE chancy_jobs SET args = jsonb_build_array(%s::jsonb) WHERE id = %s",
                           (deep, refs[1].id))
    async with running_worker(app):
        records = [await ref.wait(timeout=30) for ref in refs]
    assert [r.state for r in records] == [JobState.SUCCEEDED, JobState.FAILED, JobState.SUCCEEDED,
                                          JobState.SUCCEEDED]
    assert records[1].errors[-1]["type"] == "chancy.UndecodableJob"
    assert "RecursionError" in records[1].errors[-1]["message"]


@pytest.mark.parametrize("executor", ["asyncio", "thread", "solo"])
async def test_an_outcome_the_database_refuses_is_isolated(make_app, executor, monkeypatch):
    """Whatever slips past the checks: a write-back Postgres refuses (here an outcome made
    invalid behind the checks' back) fails that job alone, once, with a log line; the
    outcomes written beside it, and the claims after it, go through."""
    poisoned_value = "poison"
    real_success = Outcome.success

    def success(job_id, result):
        outcome = real_success(job_id, result)
        if result == poisoned_value:
            outcome.result_json = '{"not json'
        return outcome

    monkeypatch.setattr(Outcome, "success", staticmethod(success))
    app = await make_app(Queue("default", concurrency=4, executor=executor))
    refs = await app.push_many([Job(poison_tasks.ok, args=[v]) for v in (1, poisoned_value, 3, 4, 5, 6)])
    async with running_worker(app):
        records = [await ref.wait(timeout=30) for ref in refs]
        more = await app.push(poison_tasks.ok, 7)
        assert (await more.wait(timeout=30)).result == 7
    states = [r.state for r in records]
    assert states == [JobState.SUCCEEDED, JobState.FAILED] + [JobState.SUCCEEDED] * 4
    assert records[1].errors[-1]["type"] == "chancy.OutcomeNotStorable"
    assert [r.result for r in records if r.state is JobState.SUCCEEDED] == [1, 3, 4, 5, 6]


@pytest.mark.parametrize("value, problem", [
    (float("nan"), "NaN and Infinity"), (float("-inf"), "NaN and Infinity"),
    ("a\x00b", "NUL character"), ("\udfff", "unpaired surrogate"),
])
async def test_unstorable_arguments_are_refused_at_push_with_what_to_change(app, value, problem):
    from chancy.errors import SerializationError

    for push in (lambda: app.push(poison_tasks.ok, value),
                 lambda: app.push_many([Job(poison_tasks.ok, args=[value])] * 2),
                 lambda: asyncio.to_thread(app.push_sync, Job(poison_tasks.ok, kwargs={"v": value}))):
        with pytest.raises(SerializationError, match=problem):
            await push()


async def test_bulk_copy_refuses_unstorable_arguments(app):
    from chancy.errors import SerializationError
    from chancy.task import Task

    task = Task(app, poison_tasks.ok, name="poison_tasks.ok_bulk")
    with pytest.raises(SerializationError, match="NUL character"):
        await task.push_many([[i] for i in range(1500)] + [["a\x00"]])
    async with app.store.connection() as conn:
        assert (await (await conn.execute("SELECT count(*) FROM chancy_jobs")).fetchone())[0] == 0


@pytest.mark.parametrize("options, message", [
    ({"priority": 10**12}, "priority must be from"), ({"priority": -(2**31) - 1}, "priority must be from"),
    ({"max_attempts": 2**31}, "max_attempts must be an integer from 1"),
    ({"queue": "a\x00b"}, "NUL"), ({"unique_key": "k\x00"}, "NUL"),
])
async def test_out_of_range_options_are_refused_before_the_database(app, options, message):
    with pytest.raises(ValueError, match=message):
        await app.push(Job(poison_tasks.ok, **options))


def test_storable_json_check_reads_escapes_exactly():
    from chancy import serialization

    assert serialization.dumps("\\u0000") == json.dumps("\\u0000")  # a backslash, then text
    assert serialization.dumps("😀") == '"\\ud83d\\ude00"'  # a surrogate pair is fine
    for bad in ("\x00", "x\\\x00", "\ud83d", "\ude00", "\ude00\ud83d"):
        with pytest.raises(ValueError):
            serialization.dumps(bad)
