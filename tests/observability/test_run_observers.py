"""chancy.execution's run observers: told of each job where it runs, in its context, and
never able to fail or lose it."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone

import pytest

import obs_tasks
from chancy import execution
from chancy.job import JobRecord, JobState


def _record(func: str, *args: object) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=uuid.uuid4(), queue="q", func=func, args=args, kwargs={}, priority=0,
                     state=JobState.RUNNING, attempts=1, max_attempts=1, scheduled_at=now, expires_at=None,
                     created_at=now, started_at=now, completed_at=None, taken_by="w", unique_key=None,
                     limits=(), backoff=None, meta={}, result=None, errors=[])


@pytest.fixture
def observers(monkeypatch):
    installed: list = []
    monkeypatch.setattr(execution, "run_observers", installed)
    return installed


def test_observers_see_the_job_in_its_context_and_its_outcome(observers):
    seen = []

    def observer(record):
        seen.append(("begin", execution.current_job.get().id == record.id))
        return lambda outcome: seen.append(("end", outcome.succeeded, execution.current_job.get().id == record.id))

    observers.append(observer)
    assert execution.run_sync(_record(obs_tasks.log_marker.name, "x")).succeeded
    assert not execution.run_sync(_record(obs_tasks.fail.name, "no")).succeeded
    assert seen == [("begin", True), ("end", True, True), ("begin", True), ("end", False, True)]


@pytest.mark.parametrize("where", ["begin", "end"])
async def test_a_failing_observer_is_logged_and_the_job_runs_on(observers, caplog, where):
    def observer(record):
        if where == "begin":
            raise RuntimeError("observer broke")
        return lambda outcome: (_ for _ in ()).throw(RuntimeError("observer broke"))

    observers.append(observer)
    sync = execution.run_sync(_record(obs_tasks.log_marker.name, "x"))
    asynchronous = await execution.run_async(_record(obs_tasks.async_current_span.name))
    unknown = await execution.run_async(_record("no.such.task"))
    assert sync.succeeded and asynchronous.succeeded and dataclasses.asdict(sync)["result_json"] == '"x"'
    assert not unknown.succeeded and unknown.final
    failures = [r for r in caplog.records if r.name == "chancy.execution"]
    assert len(failures) == 3 and all("failed as job" in r.getMessage() and r.exc_info for r in failures)
