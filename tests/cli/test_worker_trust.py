"""Which tasks a CLI-started worker runs: registered ones, and plain functions under an
allowed import prefix, never an arbitrary importable callable such as ``os.mkdir``
named by whoever can push a job, under every pool."""

from __future__ import annotations

import pytest

from chancy import Job, JobState
from chancy.job import JobRecord
from cli_helpers import background, cli_env, run_jobs, stop

POOLS = ["process", "thread", "asyncio", "solo"]


def assert_refused(record: JobRecord, name: str) -> None:
    """Failed for good at its first attempt, saying how to make the task runnable."""
    assert record.state is JobState.FAILED and record.attempts == 1, (record.state, record.errors)
    [error] = record.errors
    assert error["type"] == "chancy.errors.UnknownTaskError", error
    assert f"No task named {name!r}" in error["message"] and "--allow-import" in error["message"], error


@pytest.mark.parametrize("pool", POOLS)
def test_a_pushed_name_outside_the_registry_never_runs(migrated, dsn, tmp_path, pool):
    """``os.mkdir`` directly, and through the app module's own ``os``: refused; the app's
    registered task runs (so the worker does take jobs)."""
    pwned, via_app_module, made = tmp_path / "pwned", tmp_path / "via-app-module", tmp_path / "made"
    with background(["worker", "-A", "trust_native", "-P", pool, "--dsn", dsn]) as worker:
        direct, chained, registered = run_jobs(
            dsn,
            Job("os.mkdir", args=[str(pwned)], max_attempts=3),
            Job("trust_native.os.mkdir", args=[str(via_app_module)], max_attempts=3),
            Job("trust_native.make_dir", args=[str(made)]),
        )
        code, output = stop(worker)
    assert code == 0, output
    assert not pwned.exists() and not via_app_module.exists()
    assert_refused(direct, "os.mkdir")
    assert_refused(chained, "trust_native.os.mkdir")
    assert registered.state is JobState.SUCCEEDED and made.is_dir(), registered.errors


@pytest.mark.parametrize(("pool", "how"), [("process", "flag"), ("thread", "env"), ("asyncio", "flag")])
def test_allowed_imports_run_functions_defined_under_them_only(migrated, dsn, tmp_path, pool, how):
    """``--allow-import trust_plain`` (or CHANCY_ALLOWED_IMPORTS) runs its functions by
    path, in process-pool children too; not a foreign callable reached through it."""
    made, foreign = tmp_path / "made", tmp_path / "foreign"
    args = ["worker", "-A", "trust_native", "-P", pool, "--dsn", dsn]
    env = cli_env()
    if how == "flag":
        args += ["--allow-import", "trust_plain"]
    else:
        env["CHANCY_ALLOWED_IMPORTS"] = "unrelated.jobs, trust_plain"
    with background(args, env=env) as worker:
        allowed, chained = run_jobs(
            dsn,
            Job("trust_plain.make_dir", args=[str(made)]),
            Job("trust_plain.os.mkdir", args=[str(foreign)], max_attempts=3),
        )
        code, output = stop(worker)
    assert code == 0, output
    assert "functions under trust_plain" in output
    assert allowed.state is JobState.SUCCEEDED and made.is_dir(), allowed.errors
    assert_refused(chained, "trust_plain.os.mkdir")
    assert not foreign.exists()


def test_without_the_opt_in_a_plain_function_is_refused(migrated, dsn, tmp_path):
    made = tmp_path / "made"
    with background(["worker", "-A", "trust_native", "-P", "process", "--dsn", dsn]) as worker:
        [record] = run_jobs(dsn, Job("trust_plain.make_dir", args=[str(made)]))
        stop(worker)
    assert_refused(record, "trust_plain.make_dir")
    assert not made.exists()


def test_a_malformed_allowed_import_is_a_configuration_error(migrated, dsn):
    refused = migrated("worker", "-A", "trust_native", "--allow-import", "trust_plain.*")
    assert refused.code == 3 and "'trust_plain.*' is not a module prefix" in refused.err


@pytest.mark.parametrize("pool", ["process", "solo"])
def test_a_celery_message_for_an_unregistered_name_never_runs_on_a_celery_style_app(migrated, dsn, tmp_path, pool):
    """Published by a stock Celery app through the kombu transport, consumed by the
    worker of a ``chancy.compat`` app: the same rule as for a native job."""
    from celery import Celery

    import chancy.compat.kombu  # noqa: F401 - the chancy+postgresql:// transport
    from chancy.compat.protocol import job_id_for

    pwned = tmp_path / "pwned"
    publisher = Celery("publisher", broker="chancy+" + dsn, set_as_current=False)
    try:
        task_id = publisher.send_task("os.mkdir", args=[str(pwned)], queue="celery").id
    finally:
        publisher.close()
    with background(["worker", "-A", "trust_celery", "-P", pool, "--dsn", dsn]) as worker:
        [record] = run_jobs(dsn, job_id_for(task_id))
        code, output = stop(worker)
    assert code == 0, output
    assert not pwned.exists()
    assert_refused(record, "os.mkdir")
