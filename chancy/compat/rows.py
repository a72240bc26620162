"""The few job-row statements only the Celery layer needs: custom task states, children
of a task, forgetting a result. Composed once per table prefix, run on the app's pools."""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Any

from psycopg import sql

from chancy import serialization
from chancy.compat.protocol import job_id_for
from chancy.migrations import Names
from chancy.store.pg.statements import drive_sync, single, Statement

if TYPE_CHECKING:
    from chancy.app import Chancy


class CompatSQL:
    def __init__(self, names: Names) -> None:
        f = names.fields()
        # Only a live job takes a custom state; a finished one keeps its final state.
        self._set_state = sql.SQL(
            """
            UPDATE {jobs} SET meta = meta || jsonb_build_object('celery',
                coalesce(meta->'celery', '{{}}') || jsonb_build_object('state', %(state)s::text,
                                                                     'info', %(info)s::jsonb))
            WHERE id = %(id)s AND state IN ('pending', 'scheduled', 'running', 'retrying')
            """
        ).format(**f)
        self._children = sql.SQL(
            "SELECT id FROM {jobs} WHERE meta->'celery'->>'parent_id' = %(id)s ORDER BY id"
        ).format(**f)
        self._group_members = sql.SQL(
            "SELECT id, meta->'celery'->>'task_id' FROM {jobs} WHERE meta->'celery'->>'group' = %(group)s "
            "ORDER BY (meta->'celery'->>'group_index')::int, id"
        ).format(**f)
        self._forget = sql.SQL(
            "DELETE FROM {jobs} WHERE id = %(id)s AND state IN ('succeeded', 'failed', 'cancelled', 'expired')"
        ).format(**f)

    def set_state(self, job_id: uuid.UUID, state: str | None, info: Any) -> Statement:
        return Statement(self._set_state, {"id": job_id, "state": state, "info": serialization.dumps(info)})

    def children(self, task_id: str) -> Statement:
        return Statement(self._children, {"id": task_id}, lambda rows: [row[0] for row in rows])

    def group_members(self, group_id: str) -> Statement:
        return Statement(self._group_members, {"group": group_id},
                         lambda rows: [task_id or str(job_id) for job_id, task_id in rows])

    def forget(self, job_id: uuid.UUID) -> Statement:
        return Statement(self._forget, {"id": job_id})


@functools.lru_cache(maxsize=None)
def statements(prefix: str) -> CompatSQL:
    return CompatSQL(Names(prefix))


def _run(app: "Chancy", statement: Statement) -> Any:
    with app.connection_sync() as conn:
        return drive_sync(conn, single(statement))


def set_custom_state(app: "Chancy", task_id: str, state: str | None, info: Any) -> None:
    _run(app, statements(app.names.prefix).set_state(job_id_for(task_id), state, info))


def children_ids(app: "Chancy", task_id: str) -> list[uuid.UUID]:
    return _run(app, statements(app.names.prefix).children(task_id))


def forget(app: "Chancy", task_id: str) -> None:
    _run(app, statements(app.names.prefix).forget(job_id_for(task_id)))


def group_member_ids(app: "Chancy", group_id: str) -> list[str]:
    """Task ids of a group's members, in group order (each row records its group)."""
    return _run(app, statements(app.names.prefix).group_members(group_id))
