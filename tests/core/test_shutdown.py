"""SIGTERM drains: running jobs finish, nothing new is claimed; a second signal stops hard."""

import asyncio
import os
import signal
import subprocess
import sys

import core_tasks
from chancy import Job, JobState
from chancy.testing import eventually

HERE = os.path.dirname(__file__)


def _start_worker(dsn, executor, shutdown_timeout=30.0):
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "worker_main.py"), dsn, str(shutdown_timeout), executor],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


async def _running(app, ref):
    return (await ref.get()).state is JobState.RUNNING


async def _exists(path):
    return path.exists()


async def _signal_while_running(app, dsn, executor, busy, before_signal=None, after_signal=None):
    """Start a worker, wait until ``busy`` runs, SIGTERM it: (exit code, output, what
    ``before_signal`` returned)."""
    worker = _start_worker(dsn, executor)
    try:
        await eventually(lambda: _running(app, busy), timeout=20)
        before = await before_signal() if before_signal else None
        worker.send_signal(signal.SIGTERM)
        if after_signal:
            await after_signal(worker)
        code = await asyncio.to_thread(worker.wait, 20)
        return code, worker.stdout.read(), before
    finally:
        worker.kill()


async def test_sigterm_lets_running_jobs_finish_and_claims_nothing_new(app, dsn):
    busy = await app.push(core_tasks.sleep, 1.5)

    async def push_later():
        # The only slot is busy: `later` can run only if the draining worker claims
        # again when the slot frees.
        return await app.push(core_tasks.add, 1, 1)

    code, output, later = await _signal_while_running(app, dsn, "thread", busy, push_later)
    assert code == 0, output
    assert (await busy.get()).state is JobState.SUCCEEDED, output
    assert (await later.get()).state is JobState.PENDING, output
    assert "draining" in output


async def test_second_sigterm_stops_hard_and_the_job_goes_back(app, dsn, tmp_path):
    began = tmp_path / "began"
    busy = await app.push(Job(core_tasks.mark_and_sleep, args=[str(began), 60], max_attempts=2))

    async def task_began():
        # Running in the database is not yet running in a child: a job a child has not
        # taken is withdrawn by the first SIGTERM and goes back unstarted (not this test).
        await eventually(lambda: _exists(began), timeout=20)

    async def signal_again(worker):
        await asyncio.sleep(0.3)
        worker.send_signal(signal.SIGTERM)

    code, output, _ = await _signal_while_running(app, dsn, "process", busy, before_signal=task_began,
                                                  after_signal=signal_again)
    assert code == 0, output
    record = await busy.get()
    # Interrupted attempts count; with attempts left the job is retried, not lost.
    assert record.state is JobState.RETRYING, output
    assert record.attempts == 1
