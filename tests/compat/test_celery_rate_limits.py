"""Celery's task rate limits, enforced cluster-wide: the ``rate_limit`` option,
``task_default_rate_limit``, ``task_annotations`` and ``worker_disable_rate_limits``.
A minute-long window keeps these tests short: the jobs over the limit are seen waiting
(not retried, no attempt charged), not run."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from chancy.errors import ConfigurationError
from chancy.job import JobState
from tests.compat.conftest import BackgroundWorker


def _wait_for_states(celery_app, results, counts, timeout=15.0):
    """The job records once their states are exactly ``counts`` ({JobState: n})."""
    deadline = time.monotonic() + timeout
    while True:
        records = [celery_app.chancy.get_job_sync(r.id) for r in results]
        seen = {state: sum(r.state is state for r in records) for state in counts}
        if seen == counts and sum(seen.values()) == len(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {counts}, have {[r.state.value for r in records]}")
        time.sleep(0.05)


def test_rate_limit_option_lets_the_budget_run_and_the_rest_wait_uncharged(celery_app):
    @celery_app.task(bind=True, rate_limit="10/m")
    def ten_a_minute(self, i):
        return self.request.retries

    results = [ten_a_minute.delay(i) for i in range(12)]
    worker = BackgroundWorker(celery_app).start()
    try:
        records = _wait_for_states(celery_app, results, {JobState.SUCCEEDED: 10, JobState.SCHEDULED: 2})
    finally:
        worker.stop()
    assert {r.result for r in records if r.state is JobState.SUCCEEDED} == {0}  # request.retries
    waiting = [r for r in records if r.state is JobState.SCHEDULED]
    assert all(r.attempts == 0 and r.errors == [] for r in waiting)
    first_start = min(r.started_at for r in records if r.started_at)
    assert all(r.scheduled_at >= first_start + timedelta(seconds=59) for r in waiting)
    assert {results[i].state for i, r in enumerate(records) if r.state is JobState.SCHEDULED} == {"PENDING"}


def test_task_default_rate_limit_applies_to_tasks_without_their_own(celery_app):
    celery_app.conf.task_default_rate_limit = "2/m"

    @celery_app.task
    def defaulted(i):
        return i

    @celery_app.task(rate_limit="3/m")
    def own_limit(i):
        return i

    results = [defaulted.delay(i) for i in range(4)] + [own_limit.delay(i) for i in range(4)]
    worker = BackgroundWorker(celery_app).start()
    try:
        records = _wait_for_states(celery_app, results, {JobState.SUCCEEDED: 5, JobState.SCHEDULED: 3})
    finally:
        worker.stop()
    assert sum(r.state is JobState.SUCCEEDED for r in records[:4]) == 2
    assert sum(r.state is JobState.SUCCEEDED for r in records[4:]) == 3


def test_task_annotations_set_a_rate_limit(celery_app):
    name = f"{__name__}.annotated"
    celery_app.conf.task_annotations = {name: {"rate_limit": "1/m"}}

    @celery_app.task(name=name)
    def annotated(i):
        return i

    assert annotated.rate_limit == "1/m"
    results = [annotated.delay(i) for i in range(3)]
    worker = BackgroundWorker(celery_app).start()
    try:
        _wait_for_states(celery_app, results, {JobState.SUCCEEDED: 1, JobState.SCHEDULED: 2})
    finally:
        worker.stop()


def test_worker_disable_rate_limits_runs_everything(celery_app):
    celery_app.conf.worker_disable_rate_limits = True

    @celery_app.task(rate_limit="1/m")
    def unlimited_here(i):
        return i

    results = [unlimited_here.delay(i) for i in range(3)]
    worker = BackgroundWorker(celery_app).start()
    try:
        assert [r.get(timeout=15) for r in results] == [0, 1, 2]
    finally:
        worker.stop()


@pytest.mark.parametrize("value", ["10/d", "fast", "-3/s"])
def test_a_bad_rate_limit_fails_at_decoration(celery_app, value):
    with pytest.raises(ConfigurationError, match=r"task .*badly_limited: rate_limit .*'N/s', 'N/m', 'N/h'"):
        @celery_app.task(rate_limit=value)
        def badly_limited():
            pass


def test_a_bad_task_default_rate_limit_fails_when_the_worker_is_made(celery_app):
    celery_app.conf.task_default_rate_limit = "lots"
    with pytest.raises(ConfigurationError, match="rate_limit 'lots'"):
        BackgroundWorker(celery_app).start()
