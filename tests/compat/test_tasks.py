"""Bound tasks and retries, autoretry with backoff, custom states, handlers and base
classes, signals, eager mode — the "Tasks" guide's patterns."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from chancy.compat import Task, signals, states
from chancy.compat.app.task import exponential_backoff
from chancy.compat.exceptions import MaxRetriesExceededError
from chancy.job import JobState
from tests.compat.proj import tasks
from tests.compat.proj.celery import app


def test_retry_keeps_the_task_id_and_counts_retries(worker):
    key = uuid.uuid4().hex
    result = tasks.flaky.delay(key, 3)
    info = result.get(timeout=15)
    assert info == {"retries": 2, "id": result.id}
    assert tasks.attempts[key] == 3
    assert result.retries == 2


def test_retry_past_max_retries_raises_the_given_exception(worker):
    key = uuid.uuid4().hex
    result = tasks.flaky.delay(key, 10)  # max_retries=3: four attempts, then the exc itself
    with pytest.raises(ConnectionError):
        result.get(timeout=15)
    assert tasks.attempts[key] == 4


def test_retry_without_exc_ends_in_max_retries_exceeded(worker):
    result = tasks.always_retry.delay()
    with pytest.raises(MaxRetriesExceededError):
        result.get(timeout=15)


def test_autoretry_for(worker, celery_app):
    key = uuid.uuid4().hex
    result = tasks.autoretried.delay(key)
    with pytest.raises(KeyError):
        result.get(timeout=15)
    assert tasks.attempts[key] == 3  # max_retries=2
    record = celery_app.chancy.get_job_sync(result.id)
    assert record.state is JobState.FAILED and record.attempts == 3 and len(record.errors) == 3


def test_celery_backoff_formula():
    assert [exponential_backoff(1, n, 600, False) for n in range(5)] == [1, 2, 4, 8, 16]
    assert exponential_backoff(3, 10, 600, False) == 600
    assert all(0 <= exponential_backoff(2, 3, 600, True) <= 16 for _ in range(50))


def test_custom_state_with_update_state(worker, celery_app):
    result = tasks.progress.delay(1.0)
    deadline = time.monotonic() + 10
    while result.state != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result.state == "PROGRESS"
    assert result.info == {"current": 1, "total": 2}
    assert result.get(timeout=10) == "done"
    assert result.state == states.SUCCESS


class RecordingTask(Task):
    calls: list = []

    def before_start(self, task_id, args, kwargs):
        self.calls.append(("before_start", task_id))

    def on_success(self, retval, task_id, args, kwargs):
        self.calls.append(("on_success", retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(("on_failure", type(exc).__name__))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.calls.append(("after_return", status))


@app.task(base=RecordingTask)
def handled(x):
    if x < 0:
        raise ArithmeticError("negative")
    return x * 2


def test_handlers_of_a_base_class(worker):
    RecordingTask.calls.clear()
    ok = handled.delay(2)
    assert ok.get(timeout=10) == 4
    bad = handled.delay(-1)
    with pytest.raises(ArithmeticError):
        bad.get(timeout=10)
    assert RecordingTask.calls == [
        ("before_start", ok.id), ("on_success", 4), ("after_return", "SUCCESS"),
        ("before_start", bad.id), ("on_failure", "ArithmeticError"), ("after_return", "FAILURE"),
    ]


def test_signals_fire_around_a_task(worker):
    seen: list = []
    lock = threading.Lock()

    def record(signal=None, sender=None, **kwargs):
        with lock:
            seen.append(signal.name)

    for signal in (signals.task_prerun, signals.task_postrun, signals.task_success, signals.task_failure):
        signal.connect(record, sender=tasks.add)
    try:
        tasks.add.delay(1, 1).get(timeout=10)
    finally:
        for signal in (signals.task_prerun, signals.task_postrun, signals.task_success, signals.task_failure):
            signal.disconnect(record, sender=tasks.add)
    assert seen == ["task_prerun", "task_success", "task_postrun"]


def test_ignore_leaves_no_failure(worker):
    result = tasks.ignored.delay()
    assert result.get(timeout=10) is None


def test_eager_mode_runs_in_process(celery_app):
    celery_app.conf.task_always_eager = True
    result = tasks.add.delay(2, 2)
    assert result.get() == 4 and result.state == states.SUCCESS
    assert tasks.whoami.delay().get()["is_eager"] is True
    failed = tasks.fail.delay("eager")
    assert failed.state == states.FAILURE
    with pytest.raises(ValueError):
        failed.get()
    celery_app.conf.task_eager_propagates = True
    with pytest.raises(ValueError):
        tasks.fail.delay("eager")
    key = uuid.uuid4().hex
    assert tasks.flaky.delay(key, 3).get()["retries"] == 2
    assert (tasks.add.s(1, 1) | tasks.mul.s(3)).delay().get() == 6
    with celery_app.chancy.store.connection_sync() as conn:  # nothing was stored
        assert conn.execute("SELECT count(*) FROM chancy_jobs").fetchone()[0] == 0


@app.task
def fails_while_handling(key):
    try:
        {}[key]
    except KeyError:
        raise ValueError("while handling a KeyError")  # noqa: B904 - the implicit context is the point


def test_an_eager_failure_is_raised_with_its_own_context(celery_app):
    """Regression: apply(throw=True) raised the task's exception from inside the except
    clause that caught Chancy's Fail wrapper, so Python replaced the exception's own
    context with that wrapper."""
    with pytest.raises(ValueError) as raised:
        fails_while_handling.apply(("missing",), throw=True)
    assert isinstance(raised.value.__context__, KeyError)


def test_apply_returns_an_eager_result(celery_app):
    result = tasks.add.apply((3, 4))
    assert result.get() == 7 and result.successful()
    from datetime import datetime, timezone

    when = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert tasks.add.apply(([when], [])).get() == [when]  # round-trips through the serializer


def test_revoke_is_durable_without_a_worker(celery_app):
    result = tasks.add.delay(1, 1)
    result.revoke()
    assert result.state == states.REVOKED
    with pytest.raises(Exception, match="revoked"):
        result.get(timeout=1)


def test_revoke_terminate_stops_a_running_task(worker, celery_app):
    result = tasks.sleeper.delay(30)
    deadline = time.monotonic() + 10
    while celery_app.chancy.get_job_sync(result.id).state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result.revoke(terminate=True)
    record = celery_app.chancy.wait_sync(result.id, timeout=10)
    assert record.state is JobState.CANCELLED
    assert result.state == states.REVOKED


def test_forget_deletes_a_finished_result(worker, celery_app):
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=10) == 2
    result.forget()
    assert celery_app.AsyncResult(result.id).state == states.PENDING


def test_control_purge_deletes_waiting_tasks(celery_app):
    waiting = [tasks.add.delay(i, i) for i in range(3)] + [tasks.add.apply_async((1, 1), countdown=600)]
    assert celery_app.control.purge() == 4
    assert all(celery_app.AsyncResult(r.id).state == states.PENDING for r in waiting)
    assert all(celery_app.chancy.get_job_sync(r.id) is None for r in waiting)
