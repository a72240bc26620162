"""The statements that advance a ``chancy.compat`` canvas (``sql/celery_canvas.sql``), the
operations built of them (what a step's success, failure or revocation does to the rest
of its canvas), and the two canvas writes that must commit with something else: a
``Task.replace()`` (its replacement's jobs and the parked replaced job) and a revoke (the
job and the steps waiting on it). The shape of ``meta["canvas"]`` is described in
:mod:`chancy.compat.continuations`."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import psycopg

from chancy import serialization
from chancy.job import JobRecord, JobState
from chancy.migrations import Names
from chancy.store.pg.atomic import run_atomically_sync
from chancy.store.pg.statements import SqlFile, Statement, Steps, drive_sync, single

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore

#: ``scheduled_at`` of a parked job: never due, so never claimed until released (the last
#: day Python's datetime can load: not 'infinity', which no reader of the row could load).
PARKED_AT = datetime(9999, 12, 31, tzinfo=timezone.utc)


class CanvasSQL:
    """The canvas statements for one table prefix."""

    def __init__(self, names: Names) -> None:
        self.pushed_channel = names.channel("pushed")
        self.done_channel = names.channel("done")
        self._statements = SqlFile("celery_canvas.sql", names.fields())

    def park_replaced(self, record: JobRecord, canvas: dict[str, Any]) -> Statement:
        """Park a running job whose task replaced itself: it waits, with ``canvas``, for its
        replacement, guarded by the attempt that replaced it (a late writer changes nothing)."""
        meta = {**record.meta, "canvas": canvas, "celery": {**record.meta.get("celery", {}), "replaced": True}}
        return Statement(self._statements["park_replaced"],
                         {"id": record.id, "worker": record.taken_by, "attempt": record.attempts,
                          "parked_at": PARKED_AT, "meta": serialization.dumps(meta)},
                         lambda rows: bool(rows))

    def countdown(self, ids: list[str]) -> Statement:
        """Count one predecessor done for each job; answers those no longer waiting."""
        return Statement(self._statements["countdown"], {"ids": [uuid.UUID(i) for i in ids]},
                         lambda rows: [row[0] for row in rows if row[1] == 0])

    def release(self, ids: list[uuid.UUID]) -> Statement:
        return Statement(self._statements["release"], {"ids": ids, "channel": self.pushed_channel})

    def release_errbacks(self, ids: list[str], task_id: str) -> Statement:
        return Statement(self._statements["release_errbacks"],
                         {"ids": [uuid.UUID(i) for i in ids], "task_id": task_id, "channel": self.pushed_channel})

    def finish(self, ids: list[str], state: JobState, error: dict[str, Any] | None) -> Statement:
        return Statement(self._statements["finish"],
                         {"ids": [uuid.UUID(i) for i in ids], "state": state.value,
                          "error": serialization.dumps(error) if error else None, "channel": self.done_channel})

    # --- what finishing a step does to the rest of its canvas ---------------------------
    def on_success(self, canvas: dict[str, Any]) -> Steps:
        """The next steps count this one done (those no longer waiting are released);
        unused errbacks are cancelled."""
        if canvas.get("then"):
            ready = yield self.countdown(canvas["then"])
            if ready:
                yield self.release(ready)
        if canvas.get("errbacks"):
            yield self.finish(canvas["errbacks"], JobState.CANCELLED, None)

    def on_failure(self, canvas: dict[str, Any], task_id: str, error: dict[str, Any] | None) -> Steps:
        """The errbacks run; the ``downstream`` steps fail with the same error (as Celery
        marks the rest of a chain) and their errbacks (``dropped``) are cancelled."""
        if canvas.get("errbacks"):
            yield self.release_errbacks(canvas["errbacks"], task_id)
        if canvas.get("downstream"):
            yield self.finish(canvas["downstream"], JobState.FAILED, error)
        if canvas.get("dropped"):
            yield self.finish(canvas["dropped"], JobState.CANCELLED, None)

    def on_revoke(self, canvas: dict[str, Any]) -> Steps:
        """A revoked step's dependants will never run: revoke them too (and every errback)."""
        for key in ("downstream", "dropped", "errbacks"):
            if canvas.get(key):
                yield self.finish(canvas[key], JobState.CANCELLED, None)


def cancel_with_dependants_sync(store: "PgStore", cancel: Statement, canvas: dict[str, Any]) -> bool:
    """Cancel a job (``cancel``: the job statements' cancel, answering whether it did)
    and, in the same transaction, the workflow steps waiting on it."""
    def steps() -> Steps:
        cancelled = yield cancel
        if cancelled and canvas:
            yield from store.celery_canvas.on_revoke(canvas)
        return cancelled

    return run_atomically_sync(store, steps())


def replace_sync(store: "PgStore", push: Callable[[psycopg.Connection], object], record: JobRecord,
                 canvas: dict[str, Any]) -> bool:
    """``Task.replace()``'s write, in one transaction: ``push`` inserts the replacement's
    jobs on the connection it is given (the app's push on a caller's connection), and the
    running job ``record`` is parked behind them with ``canvas``. False, with nothing
    written, when its run was taken back meanwhile."""
    with store.connection_sync() as conn:
        with conn.transaction() as transaction:
            push(conn)
            parked = drive_sync(conn, single(store.celery_canvas.park_replaced(record, canvas)))
            if not parked:
                raise psycopg.Rollback(transaction)
    return parked
