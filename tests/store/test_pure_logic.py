"""Plain unit tests, no database and no worker: what a worker decides an attempt's outcome
does to its row, retry backoff, the rate rule the gates share, and the Celery message ⇄
job translation."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from chancy.compat.protocol import (LOST_DELIVERY_BUDGET, InvalidMessage, celery_retries, delivery_tag,
                                    job_from_message, job_id_for, message_from_record, parse_delivery_tag)
from chancy.execution import Outcome
from chancy.job import Backoff, Job, JobRecord, JobState, Limit
from chancy.rate_limits import RateLimit, TaskWindow, gate_order, settle, waited
from chancy.worker.outcomes import decide

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def record_of(job: Job, *, attempts: int = 1, state: JobState = JobState.RUNNING,
              created_at: datetime = T0, scheduled_at: datetime | None = None) -> JobRecord:
    """The row of ``job`` as a claim returns it."""
    return JobRecord(
        id=job.id or uuid.uuid4(), queue=job.queue, func=job.func, args=tuple(job.args), kwargs=dict(job.kwargs),
        priority=job.priority, state=state, attempts=attempts, max_attempts=job.max_attempts,
        scheduled_at=scheduled_at or job.scheduled_at or created_at, expires_at=job.expires_at,
        created_at=created_at, started_at=created_at, completed_at=None, taken_by="w", unique_key=job.unique_key,
        limits=tuple(job.limits), backoff=job.backoff, meta=dict(job.meta), result=None, errors=[])


# --- decide --------------------------------------------------------------------------------------
ERROR = {"type": "ValueError", "message": "no", "traceback": None}


def test_decide_success_and_cancel_name_the_attempt() -> None:
    row = record_of(Job("t", max_attempts=3), attempts=2)
    done = decide(row, Outcome(row.id, True, result_json="7"))
    assert (done.state, done.result_json, done.attempt, done.error) == (JobState.SUCCEEDED, "7", 2, None)
    cancelled = decide(row, Outcome(row.id, False, error=ERROR, cancelled=True))
    assert (cancelled.state, cancelled.error, cancelled.attempt) == (JobState.CANCELLED, ERROR, 2)


def test_decide_retries_with_the_jobs_backoff_while_attempts_remain() -> None:
    row = record_of(Job("t", max_attempts=3, backoff=Backoff(base=2, factor=3, jitter=False)), attempts=2)
    retry = decide(row, Outcome(row.id, False, error=ERROR))
    assert (retry.state, retry.delay, retry.error, retry.attempt, retry.max_attempts) == (
        JobState.RETRYING, 6.0, ERROR, 2, None)
    last = record_of(Job("t", max_attempts=3), attempts=3)
    assert decide(last, Outcome(last.id, False, error=ERROR)).state is JobState.FAILED


def test_decide_a_final_failure_never_retries() -> None:
    row = record_of(Job("t", max_attempts=5))
    assert decide(row, Outcome(row.id, False, error=ERROR, final=True)).state is JobState.FAILED


def test_decide_a_requested_retry_takes_its_countdown_and_budget() -> None:
    row = record_of(Job("t", max_attempts=1, backoff=Backoff(base=9, jitter=False)))
    asked = decide(row, Outcome(row.id, False, error=ERROR, retry_in=0.5, max_attempts=4, final=True))
    assert (asked.state, asked.delay, asked.max_attempts) == (JobState.RETRYING, 0.5, 4)
    negative = decide(row, Outcome(row.id, False, retry_in=-1, max_attempts=4))
    assert negative.delay == 9.0  # a negative countdown falls back to the backoff
    spent = decide(row, Outcome(row.id, False, retry_in=0.5))
    assert (spent.state, spent.max_attempts) == (JobState.FAILED, None)  # no budget left: the retry is refused


# --- Backoff -------------------------------------------------------------------------------------
def test_backoff_grows_by_its_factor_up_to_its_maximum() -> None:
    backoff = Backoff(base=1.5, factor=2, maximum=10, jitter=False)
    assert [backoff.delay(n) for n in (0, 1, 2, 3, 4, 5)] == [1.5, 1.5, 3.0, 6.0, 10, 10]


def test_backoff_jitter_draws_from_the_upper_half() -> None:
    backoff = Backoff(base=8, factor=1, jitter=True)
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(4 <= d <= 8 for d in delays) and len(set(delays)) > 1


@pytest.mark.parametrize("fields", [{"base": -1}, {"factor": 0.5}, {"maximum": float("inf")},
                                    {"base": float("nan")}])
def test_backoff_refuses_what_cannot_be_a_delay(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**fields)


def test_backoff_round_trips_through_its_dict() -> None:
    backoff = Backoff(base=0.5, factor=3, maximum=60, jitter=False)
    assert Backoff.from_dict(backoff.to_dict()) == backoff
    assert Backoff.from_dict(None) == Backoff() == Backoff.from_dict({})


# --- the rate rule (chancy.rate_limits.settle, the Postgres gate's rule in Python) ----------------
def new(i: int, priority: int = 0) -> JobRecord:
    """A job pushed at T0 and due at once (it never waited)."""
    return record_of(Job("t", priority=priority, id=uuid.UUID(int=i + 1)))


def waited_job(i: int, due: datetime = T0) -> JobRecord:
    """A job whose time had come before this claim (deferred, retried or scheduled)."""
    return record_of(Job("t", id=uuid.UUID(int=i + 1)), created_at=due - timedelta(seconds=30), scheduled_at=due)


def offsets(verdicts: dict[uuid.UUID, datetime | None], now: datetime) -> list[float | None]:
    return [None if due is None else (due - now).total_seconds() for due in verdicts.values()]


def test_settle_starts_the_free_ones_and_lines_the_rest_up() -> None:
    window = TaskWindow()
    verdicts = settle(window, [new(i) for i in range(5)], RateLimit(2, 60), T0)
    assert offsets(verdicts, T0) == [None, None, 60, 90, 120]
    assert window.starts == [T0, T0] and window.deferred_until == T0 + timedelta(seconds=150)
    # Later in the same window a new job joins the end of the line.
    later = T0 + timedelta(seconds=10)
    assert offsets(settle(window, [new(9)], RateLimit(2, 60), later), T0) == [150]


def test_settle_forgets_starts_older_than_the_period() -> None:
    window = TaskWindow(starts=[T0 - timedelta(seconds=61), T0 - timedelta(seconds=30)])
    verdicts = settle(window, [new(0), new(1)], RateLimit(2, 60), T0)
    assert offsets(verdicts, T0) == [None, 30]  # one start left in the window: the second waits for it
    assert window.starts == [T0 - timedelta(seconds=30), T0]


def test_settle_gives_a_job_that_waited_its_exact_turn() -> None:
    """A waited job is not sent to the end of the line of new ones: it gets the time the
    window frees for it."""
    window = TaskWindow(deferred_until=T0 + timedelta(seconds=500))
    verdicts = settle(window, gate_order([new(0), waited_job(1)]), RateLimit(1, 60), T0)
    assert list(verdicts) == [uuid.UUID(int=2), uuid.UUID(int=1)]  # the waited one first
    assert offsets(verdicts, T0) == [None, 500]  # the new one: at the end of the line
    window = TaskWindow(starts=[T0], deferred_until=T0 + timedelta(seconds=500))
    assert offsets(settle(window, [waited_job(3)], RateLimit(1, 60), T0), T0) == [60]  # not behind the line


def test_gate_order_serves_waited_jobs_then_the_best() -> None:
    jobs = [new(0), new(1, priority=5), waited_job(2), new(3, priority=5)]
    assert [r.id.int - 1 for r in gate_order(jobs)] == [2, 1, 3, 0]
    assert waited(jobs[2]) and not waited(jobs[0])


# --- Celery message <-> job (chancy.compat.protocol) -----------------------------------------------
def celery_message(task_id: str = "9b1f4a3e-6d7c-4d2e-8f1a-0c2b3d4e5f60", *, body: Any = None,
                   content_type: str = "application/json", **headers: Any) -> dict[str, Any]:
    """A protocol-v2 message as a kombu virtual channel's ``_put`` receives it."""
    raw = json.dumps(body if body is not None else [[1, 2], {"k": "v"}, {"callbacks": None, "errbacks": None,
                                                                      "chain": None, "chord": None}])
    return {
        "body": base64.b64encode(raw.encode()).decode(), "content-type": content_type, "content-encoding": "utf-8",
        "headers": {"lang": "py", "task": "proj.add", "id": task_id, "retries": 0, "eta": None, "expires": None,
                    "timelimit": [None, None], "root_id": task_id, "parent_id": None, "group": None, **headers},
        "properties": {"correlation_id": task_id, "reply_to": "r1", "delivery_mode": 2, "priority": 3,
                       "body_encoding": "base64", "delivery_tag": "t1",
                       "delivery_info": {"exchange": "", "routing_key": "celery"}},
    }


def test_a_message_becomes_a_job() -> None:
    eta = "2030-01-02T03:04:05+00:00"
    translation = job_from_message(celery_message(retries=2, eta=eta, timelimit=[30, 20], custom="x"), "celery")
    job = translation.job
    assert translation.error is None and translation.attempts == 2
    assert (job.func, job.args, job.kwargs, job.queue, job.priority) == ("proj.add", (1, 2), {"k": "v"}, "celery", 3)
    assert job.id == uuid.UUID("9b1f4a3e-6d7c-4d2e-8f1a-0c2b3d4e5f60")
    assert job.max_attempts == 2 + 1 + LOST_DELIVERY_BUDGET
    assert job.scheduled_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc) and job.expires_at is None
    assert job.limits == (Limit(Limit.Type.TIME, 30),)
    celery = job.meta["celery"]
    assert (celery["reply_to"], celery["correlation_id"], celery["headers"], celery["eta"]) == (
        "r1", "9b1f4a3e-6d7c-4d2e-8f1a-0c2b3d4e5f60", {"custom": "x"}, eta)
    assert "task_id" not in celery and celery["digest"]


def test_a_message_with_priorities_lower_first() -> None:
    assert job_from_message(celery_message(), "q", lower_priority_first=True).job.priority == 6


def test_a_task_id_that_is_no_uuid_keeps_its_text() -> None:
    job = job_from_message(celery_message("my-task"), "q").job
    assert job.id == job_id_for("my-task") == uuid.uuid5(uuid.NAMESPACE_URL, "celery-task:my-task")
    assert job.meta["celery"]["task_id"] == "my-task"


def test_a_protocol_v1_message_becomes_a_job() -> None:
    body = {"task": "proj.mul", "id": "0f0e0d0c-0b0a-4908-8706-050403020100", "args": [3], "kwargs": {"y": 4},
            "retries": 1, "timelimit": [None, 15]}
    message = celery_message(body=body)
    message["headers"] = {}
    translation = job_from_message(message, "q")
    assert translation.error is None
    job = translation.job
    assert (job.func, job.args, job.kwargs, translation.attempts) == ("proj.mul", (3,), {"y": 4}, 1)
    assert job.limits == (Limit(Limit.Type.TIME, 15),)


@pytest.mark.parametrize("message", [
    celery_message(body=[1, 2]),  # not [args, kwargs, embed]
    celery_message(content_type="application/x-python-serialize"),  # pickle: not accepted
    celery_message(eta="tomorrow"),
    {"headers": {"task": "proj.add", "id": "x"}},  # no body
])
def test_a_message_that_cannot_run_becomes_a_failed_job_keeping_it(message: dict[str, Any]) -> None:
    translation = job_from_message(message, "q")
    assert translation.error and translation.error.startswith("Unrunnable Celery message")
    assert translation.job.meta["celery"]["raw"]["headers"] == message["headers"]
    assert translation.attempts == 0


def test_a_row_becomes_the_message_a_celery_worker_consumes() -> None:
    translation = job_from_message(celery_message(retries=1, timelimit=[30, None]), "celery")
    row = record_of(translation.job, attempts=3)
    message = message_from_record(row, accept=["json"])
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs, embed["callbacks"]) == ([1, 2], {"k": "v"}, None)
    headers, properties = message["headers"], message["properties"]
    assert (headers["task"], headers["id"], headers["retries"], headers["timelimit"]) == (
        "proj.add", "9b1f4a3e-6d7c-4d2e-8f1a-0c2b3d4e5f60", 2, [30, None])
    assert (properties["priority"], properties["reply_to"], properties["delivery_tag"]) == (3, "r1", f"{row.id}/3")
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "celery", "redelivered": False}
    assert message["content-type"] == "application/json"


def test_a_row_that_cannot_be_read_is_no_message() -> None:
    row = record_of(Job("t"))
    row.__dict__["problem"] = "RecursionError: too deep"
    with pytest.raises(InvalidMessage, match="cannot be read"):
        message_from_record(row, accept=["json"])


def test_retries_count_from_the_last_replacement() -> None:
    row = record_of(Job("t", meta={"celery": {"retries_base": 2}}), attempts=5)
    assert celery_retries(row) == 2 and celery_retries(record_of(Job("t"), attempts=1)) == 0


def test_delivery_tags_name_one_attempt_of_one_row() -> None:
    row = record_of(Job("t"), attempts=4)
    assert parse_delivery_tag(delivery_tag(row)) == (row.id, 4)
    with pytest.raises(InvalidMessage):
        parse_delivery_tag("not-a-tag")
