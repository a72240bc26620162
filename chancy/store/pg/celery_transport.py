"""The statements the kombu transport and the result backend add to the core's job SQL:
storing a published Celery message as a row, acknowledging or rejecting one delivery,
and writing Celery task states onto rows.

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

Every statement here is idempotent, so :func:`run_reconnecting` may send it again after
the connection dropped (a Postgres restart or failover) without knowing whether the
first one committed.

Same pattern as :mod:`chancy.queues.sql`: statements are composed once per table prefix
and driven by either a sync or an async connection."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Any, Callable

import psycopg
from psycopg import sql

from chancy import serialization
from chancy.compat.process_connection import ProcessConnection
from chancy.compat.protocol import job_id_for
from chancy.migrations import Names
from chancy.store.pg.statements import ready, Statement, Steps

log = logging.getLogger("chancy.compat.transport")

WAITING = "('pending', 'scheduled', 'retrying')"
#: How long an operation keeps retrying after its connection dropped: long enough for a
#: Postgres restart or a failover, short enough that a server gone for good is reported.
RECONNECT_TIMEOUT = 30.0
RECONNECT_MAX_PAUSE = 2.0


def run_reconnecting(database: ProcessConnection, operation: Callable[[], Steps], action: str,
                     *, transaction: bool = False) -> Any:
    """Run an idempotent operation, again after a dropped connection (with a log line),
    for up to :data:`RECONNECT_TIMEOUT` seconds, so a restart of Postgres neither loses a
    published message nor turns a stored result into an error; then the error is raised."""
    started = time.monotonic()
    pause = 0.05
    while True:
        try:
            return database.run(operation(), transaction=transaction)
        except psycopg.OperationalError as exc:
            if time.monotonic() - started + pause > RECONNECT_TIMEOUT:
                raise
            log.warning("%s: the connection to Postgres failed (%s); retrying in %.2f s", action, first_line(exc), pause)
            time.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX_PAUSE)


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's connection errors run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


#: ``scheduled_at`` of a row no worker may claim: the last day Python's datetime can
#: load (not 'infinity', which no reader of the row could load).
PARKED_AT = "timestamptz '9999-12-31 00:00:00+00'"


def _names_next_step(celery: sql.Composable, task_id: sql.Composable) -> sql.Composable:
    """Whether a message's ``celery`` meta names ``task_id`` as a later step: in its
    chain, as its chord's body, or as the first step of that body (a chord chained on)."""
    return sql.SQL(
        """({celery}->'chain' @> jsonb_build_array(jsonb_build_object('options',
                jsonb_build_object('task_id', {task_id}::text)))
            OR {celery}->'chord'->'options'->>'task_id' = {task_id}
            OR {celery}->'chord'->'kwargs'->'tasks'->0->'options'->>'task_id' = {task_id})"""
    ).format(celery=celery, task_id=task_id)


def _nesting(value: Any) -> int:
    """A message's ``replaced_task_nesting`` (0 when absent or not a number)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _count(rows: list[tuple]) -> int:
    return rows[0][0] if rows else 0


def _canvas(rows: list[tuple]) -> dict[str, Any] | None:
    """The ``chancy.compat`` canvas bookkeeping of the stored row, if it has any."""
    return serialization.loads(rows[0][2]) if rows and rows[0][2] else None


class TransportSQL:
    def __init__(self, names: Names) -> None:
        f = names.fields()
        self.pushed_channel = names.channel("pushed")
        self.done_channel = names.channel("done")
        # A conflicting id takes over its row only while a Celery consumer runs it (or
        # after an ack finished it without a result, when results do not come through
        # this backend), and only for the task's own retry (same task, ``retries`` equal
        # to the deliveries since the row was last replaced) or its replacement (see
        # ``replacing``). ``existing`` reads the row as it was before this statement, to
        # tell a repeated message from a refused one.
        base = sql.SQL("COALESCE((j.meta->'celery'->>'retries_base')::int, 0)")
        retrying = sql.SQL("(j.func = EXCLUDED.func AND EXCLUDED.attempts > 0 "
                           "AND j.attempts = EXCLUDED.attempts + {base})").format(base=base)
        task_id = sql.SQL("COALESCE(j.meta->'celery'->>'task_id', j.id::text)")
        # Task.replace() publishes the replacing signature under the replaced task's id:
        # a single task straight from the replaced task (its parent is the task itself);
        # the last task of a chain, or the body of the chord a group is made into, later
        # from the task before it, whose own message named this id as a next step (see
        # ``_names_next_step``). Either way it carries Celery's replace marks: a deeper
        # replaced_task_nesting and the replaced task's root.
        def marked_by(row: str) -> sql.Composable:
            """The message's replace marks, deeper than those of the row ``row``."""
            return sql.SQL(
                "%(nesting)s > COALESCE(({row}.meta->'celery'->>'replaced_task_nesting')::int, 0) "
                "AND COALESCE({row}.meta->'celery'->>'root_id', {row}.meta->'celery'->>'task_id', {row}.id::text) "
                "= %(root_id)s").format(row=sql.Identifier(row))

        replacing = sql.SQL(
            """({marked} AND (%(parent_id)s = {task_id}
                     OR EXISTS (SELECT 1 FROM {jobs} p WHERE p.id = %(parent_job)s
                                AND {parent_names_it})))"""
        ).format(marked=marked_by("j"), task_id=task_id,
                 parent_names_it=_names_next_step(sql.SQL("p.meta->'celery'"), sql.SQL("%(task_id)s")), **f)
        # The replaced task waits for a replacement published later (a chain's last task,
        # a chord's body) parked, no longer running under its consumer: the first message
        # of the replacement, sent by the task itself, parks it, so a consumer stopping
        # meanwhile does not get it run again; the replacement takes the row over.
        awaiting = sql.SQL("(j.state = 'scheduled' AND j.meta->'celery'->>'awaiting_replacement' = 'true')")
        insert = sql.SQL(
            """
                INSERT INTO {jobs} AS j (id, queue, func, args, kwargs, priority, state, attempts,
                    max_attempts, scheduled_at, expires_at, limits, meta, errors, completed_at)
                VALUES (%(id)s, %(queue)s, %(func)s, %(args)s, %(kwargs)s, %(priority)s,
                    CASE WHEN %(error)s::jsonb IS NOT NULL THEN 'failed'
                         WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled'
                         ELSE 'pending' END,
                    %(attempts)s, %(max_attempts)s, COALESCE(%(scheduled_at)s, now()),
                    %(expires_at)s, %(limits)s, %(meta)s,
                    CASE WHEN %(error)s::jsonb IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(%(error)s::jsonb) END,
                    CASE WHEN %(error)s::jsonb IS NOT NULL THEN now() END)
            """).format(**f)
        notify = sql.SQL(
            """CASE WHEN s.state = 'pending' THEN pg_notify(%(pushed)s, s.queue) END,
               CASE WHEN s.state = 'failed' THEN pg_notify(%(done)s, s.id::text) END""")
        # A message under a new id without replacement marks (nearly every publish): the
        # row, nothing else to look at. Short enough for psycopg's parse cache, which the
        # statement below is not; that one runs only for an id already taken (a retry, a
        # publish repeated after a dropped connection, a refused reuse) and for
        # Task.replace()'s messages.
        self._store_new = ready(sql.SQL(
            "WITH stored AS ({insert} ON CONFLICT (id) DO NOTHING RETURNING id, queue, state) "
            "SELECT s.state, NULL::text, FALSE, FALSE, {notify} FROM stored s").format(insert=insert, notify=notify))
        self._store = ready(sql.SQL(
            """
            WITH stored AS (
                {insert}
                ON CONFLICT (id) DO UPDATE SET
                    queue = EXCLUDED.queue, func = EXCLUDED.func, args = EXCLUDED.args,
                    kwargs = EXCLUDED.kwargs, priority = EXCLUDED.priority, state = EXCLUDED.state,
                    attempts = EXCLUDED.attempts + {new_base},
                    max_attempts = EXCLUDED.max_attempts + {new_base},
                    scheduled_at = EXCLUDED.scheduled_at, expires_at = EXCLUDED.expires_at,
                    limits = EXCLUDED.limits,
                    meta = jsonb_set(EXCLUDED.meta, '{{celery,retries_base}}', to_jsonb({new_base})),
                    errors = j.errors || EXCLUDED.errors, result = NULL, taken_by = NULL,
                    started_at = NULL, completed_at = EXCLUDED.completed_at
                WHERE ({retrying} OR {replacing})
                    AND ((j.state = 'running' AND j.taken_by LIKE 'celery:%%')
                         OR (j.state = 'succeeded' AND j.result IS NULL
                             AND j.meta->'celery'->>'finished_by_ack' = 'true'))
                   OR ({replacing} AND {awaiting})
                RETURNING id, queue, state, meta->'celery' AS celery
            ),
            parked AS (
                UPDATE {jobs} r SET state = 'scheduled', scheduled_at = {parked_at}, taken_by = NULL,
                    meta = r.meta || jsonb_build_object('celery', COALESCE(r.meta->'celery', '{{}}')
                        || jsonb_build_object('awaiting_replacement', true))
                FROM stored s
                WHERE r.id = %(parent_job)s AND %(parent_id)s <> %(task_id)s
                    AND r.state = 'running' AND r.taken_by LIKE 'celery:%%'
                    AND {marked_by_parent} AND {names_parent}
                RETURNING r.id
            ),
            existing AS (
                SELECT state, meta->'celery'->>'digest' = %(digest)s AS repeated,
                    (state = 'cancelled' AND meta->'celery'->>'awaiting_replacement' = 'true' AND {replacing})
                        AS discarded
                FROM {jobs} j WHERE id = %(id)s
            )
            SELECT s.state, e.state, COALESCE(e.repeated, FALSE), s.state IS NULL AND COALESCE(e.discarded, FALSE),
                   {notify}
            FROM (VALUES (1)) AS one LEFT JOIN stored s ON TRUE LEFT JOIN existing e ON TRUE
                LEFT JOIN (SELECT count(*) FROM parked) AS parked_count ON TRUE
            """
        ).format(insert=insert, notify=notify,
                 retrying=retrying, replacing=replacing, awaiting=awaiting, parked_at=sql.SQL(PARKED_AT),
                 marked_by_parent=marked_by("r"),
                 names_parent=_names_next_step(sql.SQL("s.celery"), sql.SQL("%(parent_id)s")),
                 new_base=sql.SQL("(CASE WHEN {retrying} THEN {base} ELSE j.attempts END)").format(
                     retrying=retrying, base=base),
                 **f))
        # A delivery is one claim of a row: (id, attempts) under the consumer's id.
        delivery = sql.SQL("id = %(id)s AND attempts = %(attempt)s AND state = 'running' AND taken_by = %(consumer)s")
        # This delivery's task ended with no outcome for the backend to store (it raised
        # Ignore or Reject, see end_unrecorded).
        unrecorded = sql.SQL("meta->'celery'->'unrecorded_attempt' = to_jsonb(attempts)")
        # An ack finishes the row, unless its result is still to come through the Chancy
        # result backend (``finish`` false): then the row stays running under the
        # consumer, so a consumer dying mid-task gets it recovered, until the backend
        # writes the outcome — or the task is known to have ended without one.
        self._ack = ready(sql.SQL(
            """
            WITH acked AS (
                UPDATE {jobs} SET
                    state = CASE WHEN %(finish)s OR {unrecorded} THEN 'succeeded' ELSE state END,
                    completed_at = CASE WHEN %(finish)s OR {unrecorded} THEN now() END,
                    meta = meta || jsonb_build_object('celery', COALESCE(meta->'celery', '{{}}')
                        || jsonb_build_object('acked_by', %(consumer)s::text, 'finished_by_ack', %(finish)s::boolean)
                        || CASE WHEN {unrecorded} THEN '{{"result_ignored": true}}'::jsonb ELSE '{{}}'::jsonb END)
                WHERE {delivery}
                RETURNING id, state
            )
            SELECT CASE WHEN state = 'succeeded' THEN pg_notify(%(done)s, id::text) END FROM acked
            """
        ).format(delivery=delivery, unrecorded=unrecorded, **f))
        # The other half: a task that raised Ignore or Reject stores no state (Celery's
        # trace only logs it), so the row is noted as ended without an outcome and, once
        # its delivery is acknowledged too (an early ack already was; an acks_late one
        # follows), finished with no result, read as PENDING as on Redis (the message
        # acked and gone). Never before the task ended, so a consumer dying mid-task still
        # gets its row recovered. A task that stored a state meanwhile
        # (``Task.replace()`` stored its replacement) no longer matches the delivery.
        acked = sql.SQL("meta->'celery'->>'acked_by' = taken_by")
        self._end_unrecorded = ready(sql.SQL(
            """
            WITH ended AS (
                UPDATE {jobs} SET
                    state = CASE WHEN {acked} THEN 'succeeded' ELSE state END,
                    completed_at = CASE WHEN {acked} THEN now() ELSE completed_at END,
                    meta = meta || jsonb_build_object('celery', COALESCE(meta->'celery', '{{}}')
                        || jsonb_build_object('unrecorded_attempt', attempts)
                        || CASE WHEN {acked} THEN '{{"result_ignored": true}}'::jsonb ELSE '{{}}'::jsonb END)
                WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'running' AND taken_by LIKE 'celery:%%'
                RETURNING id, state
            )
            SELECT CASE WHEN state = 'succeeded' THEN pg_notify(%(done)s, id::text) END FROM ended
            """
        ).format(acked=acked, **f))
        # A requeued delivery (a reject with requeue, a channel closed with it still
        # unacknowledged) is delivered next as ``redelivered``, as kombu marks a message
        # it restores. Its next delivery has the same attempt number, so a note that its
        # task ended (``Reject(requeue=True)``) is dropped: that one will run again.
        self._requeue = ready(sql.SQL(
            """
            WITH requeued AS (
                UPDATE {jobs} SET state = 'pending', attempts = GREATEST(attempts - 1, 0),
                    taken_by = NULL, started_at = NULL,
                    meta = meta || jsonb_build_object('celery',
                        (COALESCE(meta->'celery', '{{}}') - 'unrecorded_attempt') || jsonb_build_object('redelivered', true))
                WHERE {delivery}
                RETURNING queue
            )
            SELECT pg_notify(%(pushed)s, queue) FROM requeued
            """
        ).format(delivery=delivery, **f))
        # After a claim whose answer was lost (the connection dropped), rows it may have
        # committed are running under the consumer yet were never delivered: put back
        # every row it holds that is neither delivered nor acknowledged by it.
        self._release_undelivered = ready(sql.SQL(
            """
            WITH released AS (
                UPDATE {jobs} SET state = 'pending', attempts = GREATEST(attempts - 1, 0),
                    taken_by = NULL, started_at = NULL
                WHERE id = ANY(ARRAY(
                    SELECT id FROM {jobs}
                    WHERE state = 'running' AND taken_by = %(consumer)s AND id <> ALL(%(delivered)s::uuid[])
                      AND meta->'celery'->>'acked_by' IS DISTINCT FROM %(consumer)s))
                RETURNING queue
            )
            SELECT pg_notify(%(pushed)s, queue) FROM released
            """
        ).format(**f))
        self._fail = ready(sql.SQL(
            """
            WITH failed AS (
                UPDATE {jobs} SET state = 'failed', completed_at = now(),
                    errors = errors || jsonb_build_array(%(error)s::jsonb || jsonb_build_object('attempt', attempts))
                WHERE {delivery}
                RETURNING id
            )
            SELECT pg_notify(%(done)s, id::text) FROM failed
            """
        ).format(delivery=delivery, **f))
        self._purge = ready(sql.SQL(
            "WITH purged AS (DELETE FROM {jobs} WHERE queue = %(queue)s AND state IN " + WAITING
            + " RETURNING 1) SELECT count(*) FROM purged"
        ).format(**f))
        self._size = ready(sql.SQL(
            "SELECT count(*) FROM {jobs} WHERE queue = %(queue)s AND state IN " + WAITING
        ).format(**f))
        # Result backend: a Celery state written onto the row. Terminal states finish the
        # row; others only record the Celery state and its info in meta. A task that never
        # went through the transport (another broker) gets a row here: finished, or for
        # a non-terminal state one parked (PARKED_AT), so no worker claims it;
        # ``celery.foreign`` marks such a row: the task runs wherever its broker sent it
        # (see :func:`chancy.compat.kombu.revoke_steps`). ``celery.write`` names one store: sent again after a dropped connection, a store
        # that had committed changes nothing and returns no row (so its canvas step and
        # notification are not repeated).
        self._store_state = ready(sql.SQL(
            """
            WITH stored AS (
                INSERT INTO {jobs} AS j (id, queue, func, args, kwargs, state, attempts, meta,
                                         result, errors, completed_at, started_at, scheduled_at)
                VALUES (%(id)s, %(queue)s, %(func)s, %(args)s, %(kwargs)s,
                        COALESCE(%(state)s::text, 'scheduled'), 1,
                        jsonb_build_object('celery', %(celery)s::jsonb || jsonb_build_object('foreign', true)),
                        %(result)s,
                        CASE WHEN %(error)s::jsonb IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(%(error)s::jsonb) END,
                        CASE WHEN %(state)s::text IS NOT NULL THEN now() END, now(),
                        CASE WHEN %(state)s::text IS NULL THEN {parked_at} ELSE now() END)
                ON CONFLICT (id) DO UPDATE SET
                    state = COALESCE(%(state)s::text, j.state),
                    result = CASE WHEN %(state)s::text IS NULL THEN j.result ELSE %(result)s END,
                    errors = CASE WHEN %(error)s::jsonb IS NULL THEN j.errors
                                  ELSE j.errors || jsonb_build_array(%(error)s::jsonb) END,
                    completed_at = CASE WHEN %(state)s::text IS NULL THEN j.completed_at ELSE now() END,
                    taken_by = CASE WHEN %(state)s::text IS NULL THEN j.taken_by END,
                    meta = j.meta || jsonb_build_object('celery',
                        COALESCE(j.meta->'celery', '{{}}') || %(celery)s::jsonb)
                WHERE j.meta->'celery'->>'write' IS DISTINCT FROM %(celery)s::jsonb->>'write'
                RETURNING id, state, meta->'canvas' AS canvas
            )
            SELECT id, CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'expired')
                            THEN pg_notify(%(done)s, id::text) END, canvas::text
            FROM stored
            """
        ).format(parked_at=sql.SQL(PARKED_AT), **f))
        self._forget = ready(sql.SQL(
            "DELETE FROM {jobs} WHERE id = %(id)s AND state IN ('succeeded', 'failed', 'cancelled', 'expired')"
        ).format(**f))

    def store(self, job: Any, attempts: int, error: str | None) -> Steps:
        """Store a translated message (see :func:`chancy.compat.protocol.job_from_message`,
        which puts the message's digest and headers in ``meta["celery"]``): as a new row
        in one short statement when it can be one, else by the rules of the id's reuse."""
        args_json, kwargs_json = serialization.dumps_arguments(job.func, job.args, job.kwargs)
        celery = job.meta.get("celery") or {}
        task_id = str(celery.get("task_id") or job.id)
        parent_id = celery.get("parent_id")
        params = {
            "id": job.id, "digest": celery.get("digest"),
            "task_id": task_id, "parent_id": str(parent_id) if parent_id else None,
            "parent_job": job_id_for(parent_id) if parent_id else None,
            "root_id": str(celery.get("root_id") or task_id),
            "nesting": _nesting(celery.get("replaced_task_nesting")),
            "queue": job.queue, "func": job.func, "args": args_json, "kwargs": kwargs_json,
            "priority": job.priority, "attempts": attempts, "max_attempts": job.max_attempts,
            "scheduled_at": job.scheduled_at, "expires_at": job.expires_at,
            "limits": serialization.dumps([lim.to_dict() for lim in job.limits]),
            "meta": serialization.dumps(dict(job.meta)),
            "error": serialization.dumps({"type": "chancy.compat.InvalidMessage", "message": error,
                                          "attempt": attempts}) if error else None,
            "pushed": self.pushed_channel, "done": self.done_channel,
        }
        if not params["nesting"]:  # no replacement marks: nothing to park, maybe nothing to take over
            stored = yield Statement(self._store_new, params, _new_row_outcome)
            if stored is not None:
                return stored
        return (yield Statement(self._store, params, _store_outcome))

    def _delivery(self, query: sql.Composable, job_id: uuid.UUID, attempt: int, consumer: str,
                  **extra: Any) -> Statement:
        params = {"id": job_id, "attempt": attempt, "consumer": consumer,
                  "pushed": self.pushed_channel, "done": self.done_channel, **extra}
        return Statement(query, params, lambda rows: bool(rows))

    def ack(self, job_id: uuid.UUID, attempt: int, consumer: str, finish: bool) -> Statement:
        return self._delivery(self._ack, job_id, attempt, consumer, finish=finish)

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

    def release_undelivered(self, consumer: str, delivered: list[uuid.UUID]) -> Statement:
        """Put back the rows ``consumer`` holds but has not been handed (``delivered``) nor
        acknowledged: what a claim whose answer was lost committed. Returns how many."""
        params = {"consumer": consumer, "delivered": delivered, "pushed": self.pushed_channel}
        return Statement(self._release_undelivered, params, len)

    def purge(self, queue: str) -> Statement:
        return Statement(self._purge, {"queue": queue}, _count)

    def size(self, queue: str) -> Statement:
        return Statement(self._size, {"queue": queue}, _count)

    def store_state(
        self, job_id: uuid.UUID, *, state: str | None, celery: dict[str, Any], result_json: str | None,
        error: dict[str, Any] | None, func: str, queue: str, args_json: str, kwargs_json: str, write: str,
    ) -> Statement:
        """Write a Celery state; ``write`` identifies this store, so sending the statement
        again (after a dropped connection) cannot apply it twice."""
        params = {
            "id": job_id, "state": state, "celery": serialization.dumps({**celery, "write": write}), "result": result_json,
            "error": serialization.dumps(error) if error else None, "func": func, "queue": queue,
            "args": args_json, "kwargs": kwargs_json, "done": self.done_channel,
        }
        return Statement(self._store_state, params, _canvas)

    def forget(self, job_id: uuid.UUID) -> Statement:
        return Statement(self._forget, {"id": job_id})
