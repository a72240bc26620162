"""A CLI-started worker's pool runs the app it loaded: a task registered under a custom
name runs under every pool, and under ``-P process`` each child has gone through the app
module's setup (module-level state, ``worker_process_init``) before its first job."""

from __future__ import annotations

import pytest

from chancy import Job, JobState
from cli_helpers import background, run_jobs, stop

POOLS = ["process", "thread", "asyncio", "solo"]


@pytest.mark.parametrize("pool", POOLS)
def test_a_task_with_a_custom_name_runs_under_every_pool(migrated, dsn, pool):
    with background(["worker", "-A", "trust_celery", "-P", pool, "--dsn", dsn]) as worker:
        [record] = run_jobs(dsn, Job("emails.send", args=["ada@example.com"], queue="celery"))
        code, output = stop(worker)
    assert code == 0, output
    assert record.state is JobState.SUCCEEDED, record.errors
    assert record.result == "sent to ada@example.com"


def test_process_children_went_through_the_app_modules_setup(migrated, dsn):
    with background(["worker", "-A", "trust_celery", "-P", "process", "-c", "1", "--dsn", dsn]) as worker:
        [record] = run_jobs(dsn, Job("trust_celery_tasks.setup_seen", queue="celery"))
        code, output = stop(worker)
    assert code == 0, output
    assert record.state is JobState.SUCCEEDED, record.errors
    child = record.result["pid"]
    assert child != worker.pid
    assert record.result["setup"] == {"configured_by": "trust_celery", "process_init_pid": child}


def test_a_child_that_cannot_load_the_app_stops_the_worker_with_the_reason(migrated, dsn, tmp_path):
    """The app module imports fine in the worker but fails in its children: the worker
    stops and prints the child's traceback instead of waiting for a ready child."""
    (tmp_path / "fails_in_children.py").write_text(
        "import multiprocessing\n"
        "from chancy import Chancy, Queue\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    raise RuntimeError('no config in this child')\n"
        "app = Chancy(plugins=[Queue('default')])\n")
    with background(["worker", "-A", "fails_in_children", "-P", "process", "--dsn", dsn], cwd=str(tmp_path)) as worker:
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode != 0
    assert "could not start: importing fails_in_children failed" in out
    assert "RuntimeError: no config in this child" in out
