"""``chancy worker`` run the ways Celery users run ``celery worker``: ``-A`` before the
command, the CPU count as the default concurrency, a task's print() in the worker's log as
it happens, and Ctrl-C (drain, then a second one stops at once; exit 130). Each test runs
a real worker started by the CLI, under every pool."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from chancy import Chancy, Job, JobState
from cli_helpers import background, cli_env, run_jobs, stop
from worker_output import OutputWatcher

POOLS = ["process", "thread", "asyncio", "solo"]
STARTED = "started on queues"


def push_marked(dsn: str, task: str, seconds: float, queue: str) -> str:
    """Push ``task(marker, seconds)`` (it prints the marker, then runs on) with a fresh
    marker, without waiting for it; the marker."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    app = Chancy(dsn)
    try:
        app.push_sync(Job(task, args=[marker, seconds], queue=queue))
    finally:
        app.close_sync()
    return marker


def push_long_task(dsn: str, seconds: float = 60) -> str:
    return push_marked(dsn, "celery_ways.shout_then_sleep", seconds, queue="celery")


def buffered_env(**extra: str) -> dict[str, str]:
    """The CLI's environment without PYTHONUNBUFFERED, as a service runs: stdout into a
    pipe is block-buffered, which held a task's print() back."""
    env = {k: v for k, v in cli_env().items() if k != "PYTHONUNBUFFERED"}
    return {**env, **extra}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_a_celery_app_runs_as_many_jobs_at_a_time_as_there_are_cpus(migrated, dsn):
    """Celery's ``-c`` defaults to the CPU count; a native app keeps its queues' settings."""
    with background(["worker", "-A", "celery_ways", "--dsn", dsn]) as celery_worker:
        line = OutputWatcher(celery_worker).wait_for("queue    celery:", timeout=60)
    assert f"concurrency {cpu_count()}," in line
    with background(["worker", "-A", "cli_tasks", "--dsn", dsn]) as native_worker:
        line = OutputWatcher(native_worker).wait_for("queue    default:", timeout=60)
    assert "concurrency 2," in line


def test_the_app_option_may_come_before_the_command(migrated, dsn):
    """``chancy -A proj worker``, Celery's order, runs the app's tasks."""
    with background(["-A", "celery_ways", "worker", "-P", "solo", "--dsn", dsn]) as worker:
        [record] = run_jobs(dsn, Job("celery_ways.shout_then_sleep", args=["early", 0], queue="celery"))
        code, output = stop(worker)
    assert code == 0, output
    assert record.state is JobState.SUCCEEDED, record.errors


def test_the_app_option_may_come_before_other_commands(migrated):
    result = migrated("-A", "celery_ways", "inspect", "registered")
    assert result.code == 0, result.err
    assert "celery_ways.shout_then_sleep" in result.out


@pytest.mark.parametrize("pool", POOLS)
def test_a_tasks_print_is_logged_as_it_happens(migrated, dsn, pool):
    """The task prints, then runs for a minute: its lines are in the log at once, at
    WARNING (Celery's ``worker_redirect_stdouts_level``), stdout's and stderr's."""
    with background(["worker", "-A", "celery_ways", "-P", pool, "-c", "1", "--dsn", dsn],
                    env=buffered_env()) as worker:
        output = OutputWatcher(worker)
        output.wait_for(STARTED, timeout=60)
        marker = push_long_task(dsn)
        started = time.monotonic()
        line = output.wait_for(marker, timeout=3)
        assert time.monotonic() - started < 3
        assert "WARNING" in line and "chancy.redirected" in line, line
        assert "WARNING" in output.wait_for(f"{marker} on stderr", timeout=3)


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_without_redirection_a_tasks_print_still_appears_as_it_happens(migrated, dsn, pool):
    """``worker_redirect_stdouts = False``: the line stays a plain line on stdout, but is
    not held in a buffer until the worker exits."""
    env = buffered_env(CELERY_WAYS_REDIRECT="0")
    with background(["worker", "-A", "celery_ways", "-P", pool, "-c", "1", "--dsn", dsn], env=env) as worker:
        output = OutputWatcher(worker)
        output.wait_for(STARTED, timeout=60)
        marker = push_long_task(dsn)
        assert output.wait_for(marker, timeout=3) == marker


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_native_apps_print_stays_on_stdout_and_appears_as_it_happens(migrated, dsn, pool):
    with background(["worker", "-A", "native_prints", "-P", pool, "--dsn", dsn], env=buffered_env()) as worker:
        output = OutputWatcher(worker)
        output.wait_for(STARTED, timeout=60)
        marker = push_marked(dsn, "native_prints.print_then_sleep", 60, queue="default")
        assert output.wait_for(marker, timeout=3) == marker


@pytest.mark.parametrize("pool", POOLS)
def test_a_second_ctrl_c_stops_a_draining_worker_at_once(migrated, dsn, pool):
    """The first Ctrl-C drains (the running task goes on), the second stops it at once;
    an interrupted worker exits 130, as a shell reports an interrupted command."""
    with background(["worker", "-A", "celery_ways", "-P", pool, "-c", "1", "--dsn", dsn]) as worker:
        output = OutputWatcher(worker)
        output.wait_for(STARTED, timeout=60)
        output.wait_for(push_long_task(dsn), timeout=10)
        worker.send_signal(signal.SIGINT)
        output.wait_for("draining", timeout=5)
        time.sleep(1)
        assert worker.poll() is None, "one Ctrl-C must let the running task finish"
        worker.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        assert output.exit_code(timeout=15) == 130, output.text
    assert time.monotonic() - interrupted < 10, output.text


@pytest.mark.parametrize("pool", POOLS)
def test_one_ctrl_c_drains_and_exits_130(migrated, dsn, pool):
    with background(["worker", "-A", "celery_ways", "-P", pool, "-c", "1", "--dsn", dsn]) as worker:
        output = OutputWatcher(worker)
        output.wait_for(STARTED, timeout=60)
        marker = push_long_task(dsn, seconds=2)
        output.wait_for(marker, timeout=10)
        worker.send_signal(signal.SIGINT)
        assert output.exit_code(timeout=30) == 130, output.text
    assert "succeeded" in output.text, output.text


def test_ctrl_c_during_start_up_stops_the_worker(migrated, dsn):
    """Ctrl-C while process-pool children are still starting: the worker stops (130)."""
    with background(["worker", "-A", "celery_ways", "-P", "process", "-c", "2", "--dsn", dsn]) as worker:
        output = OutputWatcher(worker)
        output.wait_for("chancy worker", timeout=60)  # the banner: children start next
        worker.send_signal(signal.SIGINT)
        time.sleep(0.2)
        worker.send_signal(signal.SIGINT)
        assert output.exit_code(timeout=15) == 130, output.text
    assert STARTED not in output.text


def test_an_unknown_redirect_level_stops_the_worker_saying_which(migrated, dsn, tmp_path):
    (tmp_path / "loud.py").write_text("from chancy.compat import Celery\n"
                                      "app = Celery('loud')\n"
                                      "app.conf.worker_redirect_stdouts_level = 'LOUD'\n")
    with background(["worker", "-A", "loud", "--dsn", dsn], cwd=str(tmp_path)) as worker:
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 3, out
    assert "worker_redirect_stdouts_level 'LOUD' is not one of DEBUG, INFO, WARNING" in out
