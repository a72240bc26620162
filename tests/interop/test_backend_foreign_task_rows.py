"""A Celery state stored for a task that never went through Chancy's broker (another
broker, or a state sent before the message) makes a row every reader can load."""

from __future__ import annotations

import uuid

from chancy import Chancy, JobState


def test_a_started_state_of_a_task_chancy_never_saw_is_a_readable_row(interop_dsn, celery_app):
    from chancy.compat.backend import ChancyBackend

    task_id = str(uuid.uuid4())
    backend = ChancyBackend(celery_app, url="chancy+" + interop_dsn)
    try:
        backend.store_result(task_id, {"pid": 1}, "STARTED")
        assert backend.get_state(task_id) == "STARTED"
    finally:
        backend.database.close()
    app = Chancy(interop_dsn)
    try:
        record = app.get_job_sync(uuid.UUID(task_id))  # failed with "timestamp too large"
        assert record.state is JobState.SCHEDULED  # never claimed by a worker
        assert record.scheduled_at.year == 9999
    finally:
        app.close_sync()
