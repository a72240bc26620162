"""The kombu transport's statements on job rows (``sql/celery_transport.sql``): storing a
published Celery message as a row, and acknowledging, requeueing or failing one delivery.

A task id names one row for good. A message reusing it takes over the row only when it
is that task's own retry (Celery's ``self.retry()`` republishes under the same id with
``retries`` counting the deliveries so far) or its replacement (``Task.replace()``: the
signature replacing a running task is published under the task's id, see
:meth:`TransportSQL.store`), and storing the very same message again (a publish repeated
after a dropped connection) changes nothing; any other reuse is refused and leaves the
row as it was.

A replacement keeps counting the row's deliveries (so a delivery tag of the replaced
run never names one of the replacement's), and notes how many came before it in
``meta["celery"]["retries_base"]``: the replacement's ``retries`` start again at 0.

Every statement here is idempotent, so
:func:`~chancy.store.pg.celery_connection.run_reconnecting` may send it again after the
connection dropped (a Postgres restart or failover) without knowing whether the first
one committed."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, NamedTuple, Sequence

from chancy import serialization
from chancy.job import JobState
from chancy.migrations import Names
from chancy.store.pg.admin import AdminStatements
from chancy.store.pg.celery_canvas import PARKED_AT
from chancy.store.pg.jobs import PUSHED, pushed_values
from chancy.store.pg.statements import SqlFile, Statement, Steps

@dataclasses.dataclass(frozen=True)
class StoreOutcome:
    """What storing a message did: ``stored`` (a new row, or a retry or replacement taking
    its row over), ``repeated`` (the row already holds this very message), ``discarded``
    (the replacement of a task revoked while it waited for it: dropped, as a Celery worker
    drops a revoked task's message), else refused, with the state of the row that keeps
    the id (``None`` when another writer is storing it right now)."""

    stored: bool
    repeated: bool
    discarded: bool
    existing_state: str | None

    @property
    def refused(self) -> bool:
        return not (self.stored or self.repeated or self.discarded)


def _new_row_outcome(rows: list[tuple]) -> StoreOutcome | None:
    """Stored as a new row; None when the id was taken (nothing written)."""
    return StoreOutcome(stored=True, repeated=False, discarded=False, existing_state=None) if rows else None


def _store_outcome(rows: list[tuple]) -> StoreOutcome:
    stored_state, existing_state, repeated, discarded = rows[0][:4]
    return StoreOutcome(stored=stored_state is not None, repeated=bool(repeated), discarded=bool(discarded),
                        existing_state=existing_state)


def _nesting(value: Any) -> int:
    """A message's ``replaced_task_nesting`` (0 when absent or not a number)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


#: The columns a push sets, in its order: a message's row sets them first, from the same
#: values (``pushed_values``: one serialization of a job for every INSERT of one).
PUSHED_COLUMNS = tuple(column for column, _, _ in PUSHED)
#: The states of the rows a queue's messages wait in.
WAITING = (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING)


class Ack(NamedTuple):
    """One acknowledged delivery: its row, its attempt (the delivery tag's) and whether the
    ack finishes the row (no outcome to wait for from the result backend)."""

    job_id: uuid.UUID
    attempt: int
    finish: bool


def _count(rows: list[tuple]) -> int:
    return rows[0][0] if rows else 0


class TransportSQL:
    """The statements of ``sql/celery_transport.sql`` for one table prefix, composed once
    (the transport runs them on every publish and delivery)."""

    def __init__(self, names: Names) -> None:
        self.pushed_channel = names.channel("pushed")
        self.done_channel = names.channel("done")
        statements = SqlFile("celery_transport.sql", names.fields())
        self._store_new = statements["store_new"]
        self._store = statements["store"]
        self._ack = statements["ack"]
        self._end_unrecorded = statements["end_unrecorded"]
        self._requeue = statements["requeue"]
        self._release = statements["release"]
        self._release_undelivered = statements["release_undelivered"]
        self._fail = statements["fail"]
        self._size = statements["size"]
        self._admin = AdminStatements(names)

    def store(self, job: Any, attempts: int, error: str | None, parent_job: uuid.UUID | None = None) -> Steps:
        """Store a translated message (see :func:`chancy.compat.protocol.job_from_message`,
        which puts the message's digest and headers in ``meta["celery"]``): as a new row
        in one short statement when it can be one, else by the rules of the id's reuse.
        ``parent_job``: the row id of the message's parent task, if it names one
        (:func:`chancy.compat.protocol.job_id_for` of its ``parent_id``)."""
        celery = job.meta.get("celery") or {}
        task_id = str(celery.get("task_id") or job.id)
        parent_id = celery.get("parent_id")
        params = dict(zip(PUSHED_COLUMNS, pushed_values(job.id, job), strict=True))
        params.update({
            "digest": celery.get("digest"),
            "task_id": task_id, "parent_id": str(parent_id) if parent_id else None,
            "parent_job": parent_job if parent_id else None,
            "root_id": str(celery.get("root_id") or task_id),
            "nesting": _nesting(celery.get("replaced_task_nesting")),
            "attempts": attempts,
            "error": serialization.dumps({"type": "chancy.compat.InvalidMessage", "message": error,
                                          "attempt": attempts}) if error else None,
            "pushed": self.pushed_channel, "done": self.done_channel,
        })
        if not params["nesting"]:  # no replacement marks: nothing to park, maybe nothing to take over
            stored = yield Statement(self._store_new, params, _new_row_outcome)
            if stored is not None:
                return stored
        return (yield Statement(self._store, params | {"parked_at": PARKED_AT}, _store_outcome))

    def _delivery(self, query: bytes, job_id: uuid.UUID, attempt: int, consumer: str, **extra: Any) -> Statement:
        params = {"id": job_id, "attempt": attempt, "consumer": consumer,
                  "pushed": self.pushed_channel, "done": self.done_channel, **extra}
        return Statement(query, params, lambda rows: bool(rows))

    def ack(self, consumer: str, acks: Sequence[Ack]) -> Statement:
        """Acknowledge deliveries of ``consumer`` in one statement; answers how many rows
        the acks finished or left running for the result backend (not those it had
        finished already, which are only noted)."""
        params = {"ids": [ack.job_id for ack in acks], "attempts": [ack.attempt for ack in acks],
                  "finish": [ack.finish for ack in acks], "consumer": consumer, "done": self.done_channel}
        return Statement(self._ack, params, len)

    def end_unrecorded(self, job_id: uuid.UUID, attempt: int) -> Statement:
        """Note that a delivery's task ended with no state to store (Ignore, Reject), run
        from wherever the task ran (a pool child does not know its consumer's id);
        ``True`` when the row matched the delivery."""
        params = {"id": job_id, "attempt": attempt, "done": self.done_channel}
        return Statement(self._end_unrecorded, params, lambda rows: bool(rows))

    def requeue(self, job_id: uuid.UUID, attempt: int, consumer: str) -> Statement:
        return self._delivery(self._requeue, job_id, attempt, consumer)

    def fail(self, job_id: uuid.UUID, attempt: int, consumer: str, error: dict[str, Any]) -> Statement:
        return self._delivery(self._fail, job_id, attempt, consumer, error=serialization.dumps(error))

    def release(self, consumer: str, ids: Sequence[uuid.UUID]) -> Statement:
        """Put back rows ``consumer`` claimed ahead and never handed to Celery (its prefetch,
        when it stops consuming or closes), giving back their attempt; answers how many."""
        return Statement(self._release, {"consumer": consumer, "ids": list(ids), "pushed": self.pushed_channel}, len)

    def release_undelivered(self, consumer: str, delivered: list[uuid.UUID]) -> Statement:
        """Put back the rows ``consumer`` holds but has not been handed (``delivered``) nor
        acknowledged: what a claim whose answer was lost committed. Returns how many."""
        params = {"consumer": consumer, "delivered": delivered, "pushed": self.pushed_channel}
        return Statement(self._release_undelivered, params, len)

    def purge(self, queue: str) -> Steps:
        """Delete the queue's waiting messages (the operators' purge); answers how many."""
        purged = yield from self._admin.purge(WAITING, [queue])
        return sum(purged.values())

    def size(self, queue: str) -> Statement:
        return Statement(self._size, {"queue": queue}, _count)
