"""Core: completion hooks add statements to the transaction that writes a job's outcome
(the mechanism the Celery layer's canvas uses), and chancy.errors.Fail ends a job without
retries. No compat code is involved here."""

from __future__ import annotations

import pytest

from chancy import Chancy, Job, JobState, Queue
from chancy.errors import Fail
from chancy.execution import registry
from chancy.store.pg.jobs import push_steps
from chancy.testing import running_worker


def record_followed(value):
    return value


def fail_for_good():
    raise Fail(ValueError("no point retrying"))


def broken_follow_up_source():
    return "done"


registry["hooktest.followed"] = record_followed
registry["hooktest.fail"] = fail_for_good
registry["hooktest.broken"] = broken_follow_up_source


@pytest.fixture
async def app(dsn):
    app = Chancy(dsn, plugins=[Queue("default", concurrency=2)])
    await app.migrate()
    yield app
    await app.close()


@pytest.fixture
def hook(app):
    removers: list = []

    def install(fn):
        removers.append(app.hooks.on_completion(fn))

    yield install
    for remove in removers:
        remove()


async def test_follow_up_runs_in_the_completing_transaction(app, hook):
    def push_next_on_success(app_, record, transition):
        if record.func != "hooktest.followed" or record.args[0] != "first":
            return None
        if transition.state is not JobState.SUCCEEDED:
            return None
        return lambda: push_steps(app_.store.jobs, [Job("hooktest.followed", args=["second"],
                                                     meta={"after": str(record.id)})])

    hook(push_next_on_success)
    async with running_worker(app):
        first = await app.push(Job("hooktest.followed", args=["first"]))
        assert (await first.wait(timeout=10)).state is JobState.SUCCEEDED
        async with app.store.connection() as conn:
            cur = await conn.execute("SELECT id FROM chancy_jobs WHERE meta->>'after' = %s", (str(first.id),))
            rows = await cur.fetchall()
        assert len(rows) == 1
        second = await app.wait(rows[0][0], timeout=10)
        assert second.result == "second"


async def test_failing_follow_up_rolls_back_the_outcome_and_is_retried(app, hook):
    """The outcome and its follow-up commit together: while the follow-up fails, the job
    stays running (not succeeded without its continuation); once it works, both land."""
    from psycopg import sql

    from chancy.store.pg.statements import single, Statement

    calls = {"n": 0}

    def flaky(app_, record, transition):
        if record.func != "hooktest.broken":
            return None

        def steps():
            calls["n"] += 1
            table = "no_such_table" if calls["n"] == 1 else "chancy_jobs"
            yield from single(Statement(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)), {}))

        return steps

    hook(flaky)
    async with running_worker(app):
        ref = await app.push(Job("hooktest.broken"))
        record = await ref.wait(timeout=10)
    assert record.state is JobState.SUCCEEDED and record.result == "done"
    assert calls["n"] == 2


async def test_a_hook_that_raises_does_not_lose_the_outcome(app, hook):
    def explode(app_, record, transition):
        raise RuntimeError("bug in a hook")

    hook(explode)
    async with running_worker(app):
        ref = await app.push(Job("hooktest.followed", args=[1]))
        assert (await ref.wait(timeout=10)).state is JobState.SUCCEEDED


async def test_fail_is_final_whatever_the_budget(app):
    async with running_worker(app):
        ref = await app.push(Job("hooktest.fail", max_attempts=5))
        record = await ref.wait(timeout=10)
    assert record.state is JobState.FAILED
    assert record.attempts == 1
    assert record.errors[-1]["type"] == "builtins.ValueError"
