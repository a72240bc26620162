"""Celery task states, results and relations on job rows (``sql/celery_results.sql``):
what the result backend (in stock Celery processes, built from a DSN and
:class:`~chancy.migrations.Names`) and ``chancy.compat`` (through ``app.store``) write
and read beside the core's job statements."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Mapping, NamedTuple

from chancy import serialization
from chancy.migrations import Names
from chancy.store.pg.celery_canvas import PARKED_AT
from chancy.store.pg.statements import SqlFile, Statement, Steps


class StoredState(NamedTuple):
    """What storing a state did: the ``chancy.compat`` canvas bookkeeping of the row it
    finished (None: none, or nothing stored), or ``canvas_pending``: nothing stored, as the
    row has canvas bookkeeping and the store was sent without its canvas step."""

    canvas: dict[str, Any] | None
    canvas_pending: bool


def _stored_state(rows: list[tuple]) -> StoredState:
    if not rows:
        return StoredState(None, False)
    canvas = rows[0][2]
    return StoredState(serialization.loads(canvas) if canvas else None, bool(rows[0][3]))


class ResultSQL:
    """The statements on Celery states and results for one table prefix."""

    def __init__(self, names: Names) -> None:
        self.done_channel = names.channel("done")
        statements = SqlFile("celery_results.sql", names.fields())
        # Composed now: the backend stores a state per task it runs.
        self._store_state = statements["store_state"]
        self._finish_ignored = statements["finish_ignored"]
        self._statements = statements

    def store_state(
        self, job_id: uuid.UUID, *, state: str | None, celery: dict[str, Any], result_json: str | None,
        error: dict[str, Any] | None, func: str, queue: str, args_json: str, kwargs_json: str, write: str,
        with_canvas: bool = True,
    ) -> Statement:
        """Write a Celery state (``state``: the row state it finishes the row in, None for
        one that does not); ``write`` identifies this store, so sending the statement
        again (after a dropped connection) cannot apply it twice. Answers a
        :class:`StoredState`: the row's canvas bookkeeping, when this store finished a
        step of a canvas; without ``with_canvas`` (a store sent alone, in one round trip)
        a row with canvas bookkeeping is not written but answered ``canvas_pending``."""
        params = {
            "id": job_id, "state": state, "celery": serialization.dumps({**celery, "write": write}),
            "result": result_json, "error": serialization.dumps(error) if error else None, "func": func,
            "queue": queue, "args": args_json, "kwargs": kwargs_json, "done": self.done_channel,
            "parked_at": PARKED_AT, "with_canvas": with_canvas,
        }
        return Statement(self._store_state, params, _stored_state)

    def finish_ignored(self, job_id: uuid.UUID, error: dict[str, Any] | None) -> Statement:
        """Finish the row of a task whose result is ignored as succeeded, or failed with
        ``error`` (Chancy's error form)."""
        return Statement(self._finish_ignored, {"id": job_id, "error": serialization.dumps(error) if error else None,
                                                "done": self.done_channel})

    def forget(self, job_id: uuid.UUID) -> Statement:
        """Delete a finished task's row (and so its result)."""
        return Statement(self._statements["forget"], {"id": job_id})

    def set_state(self, job_id: uuid.UUID, state: str | None, info: Any) -> Statement:
        return Statement(self._statements["set_state"],
                         {"id": job_id, "state": state, "info": serialization.dumps(info)})

    def children(self, task_id: str) -> Statement:
        return Statement(self._statements["children"], {"id": task_id}, lambda rows: [row[0] for row in rows])

    def group_members(self, group_id: str) -> Statement:
        """Task ids of a group's members, in group order (each row records its group)."""
        return Statement(self._statements["group_members"], {"group": group_id},
                         lambda rows: [task_id or str(job_id) for job_id, task_id in rows])

    def stamped(self, states: Iterable[str], headers: Mapping[str, Any]) -> Steps:
        """The ids of the tasks in ``states`` stamped with one of the given values of a
        header (a value or a list of values per header), each once, in the order found."""
        found: list[str] = []
        for key, wanted in headers.items():
            values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
            texts = [v if isinstance(v, str) else json.dumps(v) for v in values if v is not None]
            ids = yield Statement(self._statements["stamped"], {"states": list(states), "key": key, "values": texts},
                                  lambda rows: [row[0] for row in rows])
            found += [task_id for task_id in ids if task_id not in found]
        return found
