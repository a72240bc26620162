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


async def test_sigterm_lets_running_jobs_finish_and_claims_nothing_new(app, dsn):
    busy = await app.push(core_tasks.sleep, 1.5)
    worker = _start_worker(dsn, "thread")
    try:
        await eventually(lambda: _running(app, busy), timeout=20)
        # The only slot is busy: `later` can run only if the draining worker claims
        # again when the slot frees.
        later = await app.push(core_tasks.add, 1, 1)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 20)
        output = worker.stdout.read()
    finally:
        worker.kill()
    assert code == 0, output
    assert (await busy.get()).state is JobState.SUCCEEDED, output
    assert (await later.get()).state is JobState.PENDING, output
    assert "draining" in output


async def test_second_sigterm_stops_hard_and_the_job_goes_back(app, dsn):
    busy = await app.push(Job(core_tasks.sleep, args=[60], max_attempts=2))
    worker = _start_worker(dsn, "process")
    try:
        await eventually(lambda: _running(app, busy), timeout=20)
        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 20)
        output = worker.stdout.read()
    finally:
        worker.kill()
    assert code == 0, output
    record = await busy.get()
    # Interrupted attempts count; with attempts left the job is retried, not lost.
    assert record.state is JobState.RETRYING, output
    assert record.attempts == 1
