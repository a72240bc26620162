"""Drain and hard stop as the cluster sees them: a drain that runs out of time stops the
job hard, and the interrupted attempt counts (retried, or failed when none are left)."""

import cluster_tasks

from chancy import Job, JobState, Queue
from chancy.testing import eventually, running_worker


async def test_drain_timeout_stops_jobs_hard_and_the_attempt_counts(make_app):
    app = await make_app(Queue("default", concurrency=4, polling_interval=0.1))
    retried = await app.push(Job(cluster_tasks.sleepy, args=[30], max_attempts=2))
    failed = await app.push(Job(cluster_tasks.sleepy, args=[30], max_attempts=1))
    async with running_worker(app, shutdown_timeout=0.3):
        await eventually(lambda: _both_running(retried, failed))
    retried_record, failed_record = await retried.get(), await failed.get()
    assert retried_record.state is JobState.RETRYING and retried_record.attempts == 1
    assert failed_record.state is JobState.FAILED and failed_record.attempts == 1
    assert "stopped before the job finished" in failed_record.errors[-1]["message"]


async def _both_running(*refs):
    return all([(await ref.get()).state is JobState.RUNNING for ref in refs])
