"""Calling tasks as Celery's "Calling Tasks" guide does: delay, apply_async options,
results, naming, inline calls, signature checks."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from chancy.compat import states
from chancy.compat.exceptions import TimeoutError
from chancy.job import JobState
from chancy.store.pg import job_store
from tests.cluster.test_waiting import finish_silently
from tests.compat.proj import tasks


def test_getting_started_delay_and_get(worker):
    result = tasks.add.delay(4, 4)
    assert result.get(timeout=10) == 8
    assert result.state == states.SUCCESS and result.status == "SUCCESS"
    assert result.ready() and result.successful() and not result.failed()
    assert result.date_done is not None


def test_task_names_follow_celery(celery_app):
    assert tasks.add.name == "tests.compat.proj.tasks.add"
    assert tasks.named.name == "custom.named"
    assert "tests.compat.proj.tasks.add" in celery_app.tasks


def test_calling_a_task_runs_it_inline(celery_app):
    assert tasks.add(2, 3) == 5
    assert tasks.whoami()["id"] is None  # called directly: no task id


def test_wrong_arguments_fail_at_call_time(celery_app):
    with pytest.raises(TypeError, match="wrong arguments"):
        tasks.add.delay(1)
    with pytest.raises(TypeError):
        tasks.add.apply_async((1, 2, 3))


def test_request_context_in_the_worker(worker):
    task_id = str(uuid.uuid4())
    result = tasks.whoami.apply_async(task_id=task_id, headers={"tenant": "a"}, queue="default")
    info = result.get(timeout=10)
    assert info["id"] == task_id == result.id
    assert info["retries"] == 0 and info["is_eager"] is False
    assert info["root_id"] == task_id and info["parent_id"] is None
    assert info["headers"] == {"tenant": "a"}
    assert info["hostname"] == worker.worker.worker_id
    assert info["name"] == tasks.whoami.name


def test_a_custom_non_uuid_task_id_round_trips(worker):
    result = tasks.whoami.apply_async(task_id="report-2024-01")
    assert result.get(timeout=10)["id"] == "report-2024-01"


def test_failure_propagates_the_original_exception(worker):
    result = tasks.fail.delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=10)
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.result, ValueError)
    assert "ValueError: bad input" in result.traceback
    assert isinstance(result.get(propagate=False, timeout=1), ValueError)


def test_countdown_and_eta_schedule_the_row(celery_app):
    later = tasks.add.apply_async((1, 1), countdown=3600)
    record = celery_app.chancy.get_job_sync(later.id)
    assert record.state is JobState.SCHEDULED
    assert record.scheduled_at > datetime.now(timezone.utc) + timedelta(minutes=59)
    assert later.state == states.PENDING
    eta = datetime.now(timezone.utc) + timedelta(hours=2)
    at_eta = tasks.add.apply_async((1, 1), eta=eta, countdown=None)
    assert abs((celery_app.chancy.get_job_sync(at_eta.id).scheduled_at - eta).total_seconds()) < 1



def test_options_become_job_columns(celery_app):
    result = tasks.add.apply_async((1, 2), priority=7, queue="high", time_limit=30, soft_time_limit=20)
    record = celery_app.chancy.get_job_sync(result.id)
    assert (record.queue, record.priority) == ("high", 7)
    assert record.limits[0].value == 30  # the hard limit; the soft one is raised in the task
    assert record.meta["celery"]["timelimit"] == [30, 20]


def test_unknown_id_is_pending_and_get_times_out(celery_app):
    result = celery_app.AsyncResult(str(uuid.uuid4()))
    assert result.state == states.PENDING and result.result is None
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)


def test_get_timeout_while_the_task_waits(celery_app):
    result = tasks.add.delay(1, 1)  # no worker running
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)


def test_send_task_by_name(worker, celery_app):
    result = celery_app.send_task("tests.compat.proj.tasks.add", args=(20, 22))
    assert result.get(timeout=10) == 42


def test_shared_task_binds_to_the_current_app(worker):
    assert tasks.shared_add.delay(1, 2).get(timeout=10) == 3


def test_get_inside_a_task_is_refused(celery_app):
    from chancy.compat.app.task import Context
    from chancy.compat.local import running

    with running(tasks.add, Context(id="x", called_directly=False)):
        with pytest.raises(RuntimeError, match="Never call result.get"):
            celery_app.AsyncResult(str(uuid.uuid4())).get(timeout=0.1)


def test_expired_task_reads_revoked(worker):
    result = tasks.add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    with pytest.raises(Exception, match="expired"):
        result.get(timeout=10)
    assert result.state == states.REVOKED


def test_higher_priority_runs_first(celery_app):
    from tests.compat.conftest import BackgroundWorker
    from chancy.compat import worker_app

    worker_app(celery_app, concurrency=1, pool="thread")
    low = [tasks.whoami.apply_async(priority=0) for _ in range(3)]
    high = tasks.whoami.apply_async(priority=9)
    background = BackgroundWorker(celery_app).start()
    try:
        for result in low + [high]:
            result.get(timeout=10)
    finally:
        background.stop()
    started = {r.id: celery_app.chancy.get_job_sync(r.id).started_at for r in low + [high]}
    assert started[high.id] < min(started[r.id] for r in low)


def test_current_task_inside_a_task(worker):
    from chancy.compat import current_task

    assert not current_task
    assert tasks.whoami.delay().get(timeout=10)["current"] == tasks.whoami.name


def test_pickle_only_when_explicitly_accepted(worker, celery_app):
    from chancy.errors import ConfigurationError

    numbers = frozenset({1, 2, 3})  # not JSON: needs pickle
    with pytest.raises(ConfigurationError, match="accept_content"):
        tasks.xsum.apply_async((numbers,), serializer="pickle")
    celery_app.conf.accept_content = ["json", "pickle"]
    result = tasks.xsum.apply_async((numbers,), serializer="pickle")
    assert result.get(timeout=10) == 6
    record = celery_app.chancy.get_job_sync(result.id)
    assert record.args == () and record.meta["celery"]["payload"]["content_type"] == "application/x-python-serialize"


def test_soft_time_limit_is_raised_inside_the_task(worker):
    assert tasks.cleans_up_at_soft_limit.delay().get(timeout=10) == "cleaned up"


def test_get_sees_a_job_finished_without_a_notification_at_its_recheck(celery_app, dsn, monkeypatch):
    monkeypatch.setattr(job_store, "WAIT_RECHECK_INTERVAL", 0.2)  # AsyncResult.get waits as the core does
    result = tasks.add.delay(1, 2)  # no worker runs it
    started = time.monotonic()
    with finish_silently(dsn, result.id):
        assert result.get(timeout=20) == 42
    assert time.monotonic() - started < 5
