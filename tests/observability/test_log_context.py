"""Job context on log records: every record logged while a job runs carries its job id,
task, queue and attempt, in text and JSON lines (chancy.logs). Every pool is covered by
the CLI worker test in test_worker_cli.py; these check the formats in this process."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterator

import pytest

import obs_tasks
from chancy import execution, logs
from chancy.job import JobRecord, JobState


def _record(func: str, *args: object, attempts: int = 2) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=uuid.uuid4(), queue="mail", func=func, args=args, kwargs={}, priority=0,
                     state=JobState.RUNNING, attempts=attempts, max_attempts=3, scheduled_at=now, expires_at=None,
                     created_at=now, started_at=now, completed_at=None, taken_by="w", unique_key=None,
                     limits=(), backoff=None, meta={}, result=None, errors=[])


@pytest.fixture
def logged() -> Iterator[Callable[[str], Callable[[], list[str]]]]:
    """``logged(fmt)``: set Chancy's logging up in ``fmt`` into a buffer; its lines so far."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()

    def setup(fmt: str) -> Callable[[], list[str]]:
        logs.setup("INFO", fmt, stream=stream)
        return lambda: stream.getvalue().splitlines()

    yield setup
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_end_with_the_jobs_context_only_while_it_runs(logged):
    lines = logged("text")
    record = _record(obs_tasks.log_marker.name, "m-1")
    assert execution.run_sync(record).succeeded
    logging.getLogger("elsewhere").warning("between jobs")
    failing = _record("obs_tests.log_exception")

    def log_an_exception() -> None:
        try:
            raise KeyError("inner")
        except KeyError:
            logging.getLogger("obs_tasks").exception("it broke")

    execution.registry["obs_tests.log_exception"] = log_an_exception
    try:
        assert execution.run_sync(failing).succeeded
    finally:
        del execution.registry["obs_tests.log_exception"]
    marker, between, broke, *traceback = lines()
    assert marker.endswith(f"obs_tasks: marker m-1 [job={record.id} task=obs_tasks.log_marker attempt=2]")
    assert between.endswith("elsewhere: between jobs")
    assert broke.endswith(f"it broke [job={failing.id} task=obs_tests.log_exception attempt=2]")
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "KeyError: 'inner'"


async def test_json_lines_carry_the_jobs_fields_and_keep_the_ones_a_call_passes(logged):
    lines = logged("json")
    record = _record(obs_tasks.log_marker.name, "m-2", attempts=1)
    assert execution.run_sync(record).succeeded
    # Coroutine tasks on the event loop too, each job with its own context.
    coroutine = _record("obs_tests.logs_then_runs")

    async def logs_then_runs() -> None:
        logging.getLogger("obs_tasks").info("in a coroutine", extra={"task": "given by the call"})

    execution.registry["obs_tests.logs_then_runs"] = logs_then_runs
    try:
        assert (await execution.run_async(coroutine)).succeeded
    finally:
        del execution.registry["obs_tests.logs_then_runs"]
    logging.getLogger("elsewhere").warning("between jobs")
    marker, in_coroutine, between = map(json.loads, lines())
    assert {k: marker[k] for k in ("message", "job_id", "task", "queue", "attempt")} == {
        "message": "marker m-2", "job_id": str(record.id), "task": "obs_tasks.log_marker", "queue": "mail",
        "attempt": 1}
    assert in_coroutine["job_id"] == str(coroutine.id) and in_coroutine["task"] == "given by the call"
    assert "job_id" not in between and not any(key.startswith("_") for key in marker)
