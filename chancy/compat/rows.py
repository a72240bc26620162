"""The few job-row reads and writes only the Celery layer needs: custom task states,
children of a task, a group's members, forgetting a result. Run on the app's pools
through its store (the statements: :mod:`chancy.store.pg.celery_results`)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from chancy.compat.protocol import job_id_for
from chancy.store.pg.statements import single

if TYPE_CHECKING:
    from chancy.app import Chancy


def set_custom_state(app: "Chancy", task_id: str, state: str | None, info: Any) -> None:
    app.store.run_sync(single(app.store.celery_results.set_state(job_id_for(task_id), state, info)))


def children_ids(app: "Chancy", task_id: str) -> list[uuid.UUID]:
    return app.store.run_sync(single(app.store.celery_results.children(task_id)))


def forget(app: "Chancy", task_id: str) -> None:
    app.store.run_sync(single(app.store.celery_results.forget(job_id_for(task_id))))


def group_member_ids(app: "Chancy", group_id: str) -> list[str]:
    """Task ids of a group's members, in group order (each row records its group)."""
    return app.store.run_sync(single(app.store.celery_results.group_members(group_id)))
