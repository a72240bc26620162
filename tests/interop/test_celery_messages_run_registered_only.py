"""A Celery message that reaches a Chancy worker through the kombu transport names its
task in its headers, written by whoever can publish: the worker runs it only if the name
is registered, exactly as a stock Celery worker would, under every executor."""

from __future__ import annotations

import pytest

from chancy import Chancy
from chancy.compat.protocol import job_id_for
from chancy.job import JobState
from chancy.queues.pg import Queue
from chancy.testing import eventually, running_worker


@pytest.mark.parametrize("executor", ["asyncio", "thread", "process"])
async def test_an_unregistered_task_name_in_a_celery_message_never_runs(celery_app, interop_dsn, tmp_path, executor):
    app = Chancy(interop_dsn, plugins=[Queue("celery", executor=executor)])
    pwned, via_module = tmp_path / "pwned", tmp_path / "via-module"
    sent = [celery_app.send_task("os.mkdir", args=[str(pwned)]),
            celery_app.send_task("celery_app.os.mkdir", args=[str(via_module)])]
    try:
        async with running_worker(app):
            records = [await eventually(lambda: _finished(app, result.id), timeout=30) for result in sent]
    finally:
        await app.close()
    assert not pwned.exists() and not via_module.exists()
    for record, name in zip(records, ["os.mkdir", "celery_app.os.mkdir"]):
        assert record.state is JobState.FAILED and record.attempts == 1, record.errors
        assert record.errors[0]["type"] == "chancy.errors.UnknownTaskError"
        assert f"No task named {name!r}" in record.errors[0]["message"]


async def _finished(app: Chancy, task_id: str):
    record = await app.get_job(job_id_for(task_id))
    return record if record is not None and record.state not in (JobState.PENDING, JobState.RUNNING) else None
