"""``self.request`` carries every field Celery's worker sets, with Celery's types and
defaults, under every pool (Celery's integration test for task properties read
``self.request.properties['app_id']`` and hit a KeyError)."""

from __future__ import annotations

import os
import socket
import uuid

from chancy.compat.app.task import Context
from tests.compat.pool_worker import pool_worker  # noqa: F401 - the fixture
from tests.compat.proj import fidelity


def test_every_celery_request_field_is_set_by_the_worker(pool_worker):
    task_id = str(uuid.uuid4())
    result = fidelity.request_fields.apply_async(
        (1, [2]), {"k": "v"}, task_id=task_id, headers={"tenant": "acme"}, queue="default", priority=3,
        countdown=0.01, expires=600, time_limit=30, soft_time_limit=20, app_id="1234")
    fields = result.get(timeout=30)
    assert set(fidelity.CELERY_CONTEXT_FIELDS) <= set(fields)
    assert fields["id"] == task_id and fields["task"] == fidelity.request_fields.name
    assert fields["args"] == [1, [2]] and fields["kwargs"] == {"k": "v"}
    assert fields["retries"] == 0 and fields["is_eager"] is False and fields["called_directly"] is False
    assert isinstance(fields["eta"], str) and isinstance(fields["expires"], str)
    assert fields["group"] is None and fields["group_index"] is None
    assert fields["chord"] is None and fields["chain"] is None
    assert fields["callbacks"] is None and fields["errbacks"] is None
    assert fields["root_id"] == task_id and fields["parent_id"] is None
    assert fields["correlation_id"] == task_id and fields["reply_to"] is None
    assert fields["delivery_info"] == {"exchange": "", "routing_key": "default", "priority": 3, "redelivered": False}
    assert fields["hostname"] == pool_worker.worker.worker_id
    assert fields["origin"] == f"gen{os.getpid()}@{socket.gethostname()}"
    assert fields["timelimit"] == [30, 20] and fields["time_limit"] == 30 and fields["soft_time_limit"] == 20
    assert fields["ignore_result"] is False
    assert fields["properties"]["app_id"] == "1234" and fields["properties"]["correlation_id"] == task_id
    assert fields["properties"]["priority"] == 3
    assert fields["headers"] == {"tenant": "acme"} and fields["tenant_attribute"] == "acme"
    assert fields["stamps"] is None and fields["stamped_headers"] is None
    assert fields["replaced_task_nesting"] == 0 and fields["shadow"] is None
    assert fields["children"] == [] and fields["is_context"] is True


def test_celerys_properties_integration_test(pool_worker):
    """Celery's t/integration/test_tasks.py::test_properties."""
    result = fidelity.return_properties.apply_async(app_id="1234")
    assert result.get(timeout=30)["app_id"] == "1234"


def test_a_group_member_knows_its_group_and_position(pool_worker):
    from chancy.compat import group

    results = group(fidelity.request_fields.s(n) for n in range(2)).apply_async()
    members = results.get(timeout=30)
    assert [m["group_index"] for m in members] == [0, 1]
    assert {m["group"] for m in members} == {results.id}


def test_context_defaults_are_celerys():
    request = Context()
    assert request.args is None and request.kwargs is None and request.delivery_info is None
    assert request.retries == 0 and request.replaced_task_nesting == 0 and request.ignore_result is False
    assert request.called_directly is True and request.is_eager is False
    assert request.properties is None and request.stamps is None and request.stamped_headers is None
    request.update(timelimit=(10, 5))
    assert (request.time_limit, request.soft_time_limit) == (10, 5)
    assert request.get("missing", "default") == "default" and request.children == []


def test_eager_request_fields(celery_app):
    fields = fidelity.request_fields.apply((1,), app_id="x").get()
    assert fields["is_eager"] is True and fields["properties"]["app_id"] == "x"
    assert fields["delivery_info"]["is_eager"] is True and fields["replaced_task_nesting"] == 0
    assert fields["hostname"] == socket.gethostname()
