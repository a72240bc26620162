"""Revoking by stamped headers (``app.control.revoke_by_stamped_headers`` and
``AsyncResult.revoke_by_stamped_headers``): queued tasks, and running ones with
``terminate``, under every pool."""

from __future__ import annotations

import time
import uuid

import pytest

from chancy.compat import chain, group
from chancy.compat.exceptions import TaskRevokedError
from chancy.job import JobState
from tests.compat.pool_worker import pool_worker  # noqa: F401 - the fixture
from tests.compat.proj import fidelity


class MonitoringIdStampingVisitor:
    """The visitor of Celery's test_revoked_by_headers tests."""

    def __init__(self, monitoring_id):
        self.monitoring_id = monitoring_id

    def on_signature(self, sig, **headers):
        return {"monitoring_id": self.monitoring_id}


def test_queued_stamped_tasks_are_revoked_with_their_workflow(celery_app):
    target = uuid.uuid4().hex
    stamped = chain(fidelity.add.si(1, 1), fidelity.identity.s())
    stamped.stamp(visitor=MonitoringIdStampingVisitor(target))
    other = fidelity.add.si(2, 2)
    other.stamp(monitoring_id=4242)
    stamped_result, other_result = stamped.apply_async(), other.apply_async()
    other_result.revoke_by_stamped_headers(headers={"monitoring_id": [target]})
    assert stamped_result.state == "REVOKED" and stamped_result.parent.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        stamped_result.get(timeout=5)
    assert other_result.state == "PENDING"
    celery_app.control.revoke_by_stamped_headers({"monitoring_id": 4242})
    assert other_result.state == "REVOKED"
    record = celery_app.chancy.get_job_sync(other_result.id)
    assert record.meta["celery"]["stamps"] == {"monitoring_id": 4242}


def test_the_request_sees_its_stamps(pool_worker):
    sig = group(fidelity.request_fields.s())
    sig.stamp(monitoring_id="m-1")
    [fields] = sig.apply_async().get(timeout=30)
    assert fields["stamps"] == {"monitoring_id": "m-1"} and fields["stamped_headers"] == ["monitoring_id"]


def test_running_stamped_task_is_terminated_only_with_terminate(pool_worker, celery_app):
    sig = fidelity.sleeping.si(8)
    sig.stamp(monitoring_id="long")
    result = sig.apply_async()
    deadline = time.monotonic() + 30
    while celery_app.chancy.get_job_sync(result.id).state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    celery_app.control.revoke_by_stamped_headers({"monitoring_id": "long"})
    assert celery_app.chancy.get_job_sync(result.id).state is JobState.RUNNING
    celery_app.control.revoke_by_stamped_headers({"monitoring_id": "long"}, terminate=True)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=30)
