"""Every job statement of the Postgres queue, and the one mapping from a row to a
:class:`~chancy.job.JobRecord`. Async and sync callers run these same statements through
:func:`run_async` / :func:`run_sync`; nothing here does I/O by itself."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import uuid
from typing import Any, Callable, Generator, Iterable, Iterator, Sequence

from psycopg import pq, sql

from chancy import serialization
from chancy.errors import SerializationError
from chancy.job import (Backoff, Job, JobRecord, JobState, Limit, UndecodableRecord, is_argument_list,
                        new_job_ids)
from chancy.migrations import LIVE, Names
from chancy.queue import Transition
from chancy.store.pg.statements import Statement, Steps, drive_async, drive_sync, ready, single

# Column order of every statement that returns whole jobs; jsonb is read as text and
# decoded by our own serializer so tagged values (datetime, UUID…) come back typed.
RECORD_COLUMNS = (
    "id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts, "
    "scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key, "
    "limits::text, backoff::text, meta::text, result::text, errors::text"
)



#: A state by its column value: a dict lookup, where ``JobState(value)`` costs ~0.5 µs.
_STATES = {state.value: state for state in JobState}


def record_from_row(row: Sequence[Any]) -> JobRecord:
    """The record of one row; a row whose JSON our decoder cannot read (e.g. nested past
    its recursion limit) becomes an :class:`UndecodableRecord` instead of failing the
    whole batch it came in (a claim's other jobs are already ours)."""
    try:
        return _decoded_record(row)
    except Exception as exc:  # noqa: BLE001 - one bad row must not take its batch down
        return _undecodable_record(row, exc)


def _decoded_record(row: Sequence[Any]) -> JobRecord:
    loads = serialization.loads
    return JobRecord.from_fields(
        id=row[0],
        queue=row[1],
        func=row[2],
        args=tuple(loads(row[3])),
        kwargs=loads(row[4]),
        priority=row[5],
        state=_STATES[row[6]],
        attempts=row[7],
        max_attempts=row[8],
        scheduled_at=row[9],
        expires_at=row[10],
        created_at=row[11],
        started_at=row[12],
        completed_at=row[13],
        taken_by=row[14],
        unique_key=row[15],
        limits=() if row[16] == "[]" else tuple(Limit.from_dict(d) for d in loads(row[16])),
        backoff=Backoff.from_dict(loads(row[17])) if row[17] else None,
        meta=loads(row[18]),
        result=loads(row[19]) if row[19] is not None else None,
        errors=loads(row[20]),
    )


def _undecodable_record(row: Sequence[Any], exc: Exception) -> UndecodableRecord:
    """What can be read of a row that failed to decode: its plain columns, no arguments,
    limits, meta or result; its errors kept if they decode (a failure appends to them)."""
    try:
        errors = serialization.loads(row[20])
    except Exception:  # noqa: BLE001
        errors = []
    errors_text = row[20] if isinstance(errors, list) else "[]"
    readable = _decoded_record((*row[:3], "[]", "{}", *row[5:16], "[]", None, "{}", None, errors_text))
    record = UndecodableRecord.from_fields(**readable.__dict__)
    record.__dict__["problem"] = f"{type(exc).__name__}: {exc}"
    return record


def _records(rows: list[tuple]) -> list[JobRecord]:
    return [record_from_row(row) for row in rows]


def _first_record(rows: list[tuple]) -> JobRecord | None:
    return record_from_row(rows[0]) if rows else None


#: (column, type, table default) of each pushed value, in the insert's order. The first
#: three are always sent; any other column whose value is its table default for every job
#: pushed is left out, so the statement (and the row of parameters or COPY data) names
#: only what the jobs set: a plain ``task.push(x)`` sends 4 values, not 13.
PUSHED = (
    ("id", "uuid", None), ("queue", "text", None), ("func", "text", None),
    ("args", "jsonb", "[]"), ("kwargs", "jsonb", "{}"), ("priority", "int", 0),
    ("max_attempts", "int", 1), ("scheduled_at", "timestamptz", None),
    ("expires_at", "timestamptz", None), ("unique_key", "text", None), ("limits", "jsonb", "[]"),
    ("backoff", "jsonb", None), ("meta", "jsonb", "{}"),
)
_ALWAYS = 3
_OPTIONAL = tuple(range(_ALWAYS, len(PUSHED)))
_ARGS = [column for column, _, _ in PUSHED].index("args")


#: A push of at least this many jobs, none with a unique key or a schedule, is written with
#: COPY (several times faster than the multi-row INSERT); such jobs are plainly pending,
#: so no conflict handling and no database-clock decision is needed.
COPY_MIN_JOBS = 1000
#: Rows of COPY data formatted per write: the server parses one chunk while the next is
#: being formatted.
COPY_CHUNK = 2000


def _sent(rows: Sequence[tuple]) -> tuple[int, ...]:
    """Indexes (into :data:`PUSHED`) of the columns some job sets to a non-default value."""
    if len(rows) == 1:
        row = rows[0]
        return tuple(range(_ALWAYS)) + tuple(i for i in _OPTIONAL if row[i] != PUSHED[i][2])
    columns = list(zip(*rows))  # counting a default in a column runs in C
    return tuple(range(_ALWAYS)) + tuple(i for i in _OPTIONAL if columns[i].count(PUSHED[i][2]) != len(rows))


def _insert_query(jobs: sql.Identifier, channel: str, sent: tuple[int, ...], many: bool,
                  positional: bool = False) -> bytes:
    """``INSERT … VALUES`` of one job's parameters, or ``INSERT … SELECT … FROM unnest``
    of one array per column for many, written from one column list. The notification is
    part of ``RETURNING``: one statement, one round trip, no CTE to plan. ``positional``:
    one job's, with libpq's ``$1, $2…`` in ``sent`` order instead of psycopg's named
    placeholders (for :meth:`JobSQL.insert_one`)."""
    columns = [PUSHED[i][0] for i in sent]
    if many:
        value = {c: sql.Identifier(c) for c in columns}
        source = sql.SQL(" FROM unnest({}) AS t({})").format(
            sql.SQL(", ").join(sql.SQL("{}::{}[]").format(sql.Placeholder(PUSHED[i][0], "b"), sql.SQL(PUSHED[i][1]))
                               for i in sent),
            sql.SQL(", ").join(map(sql.Identifier, columns)))
    else:
        value = {PUSHED[i][0]: sql.SQL("{}::{}").format(
                     sql.SQL(f"${position}") if positional else sql.Placeholder(PUSHED[i][0]), sql.SQL(PUSHED[i][1]))
                 for position, i in enumerate(sent, 1)}
        source = sql.SQL("")
    targets, values = list(columns), [value[c] for c in columns]
    if "scheduled_at" in value:
        at = value["scheduled_at"]
        values[columns.index("scheduled_at")] = sql.SQL("COALESCE({}, now())").format(at)
        targets.append("state")
        values.append(sql.SQL("CASE WHEN {} > now() THEN 'scheduled' ELSE 'pending' END").format(at))
    query = sql.SQL("INSERT INTO {jobs} ({targets}) {verb}{values}{close}{source}").format(
        jobs=jobs, targets=sql.SQL(", ").join(map(sql.Identifier, targets)),
        verb=sql.SQL("SELECT " if many else "VALUES ("), values=sql.SQL(", ").join(values),
        close=sql.SQL("" if many else ")"), source=source)
    if "unique_key" in value:
        query += sql.SQL(" ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN " + LIVE + " DO NOTHING")
    query += sql.SQL(" RETURNING id, CASE WHEN state = 'pending' THEN pg_notify({}, queue) END").format(
        sql.Literal(channel))
    return ready(query)


@dataclasses.dataclass(frozen=True)
class OneInsert:
    """One job's INSERT for libpq itself: positional parameters sent as text, and the
    name it is prepared under on a connection (a digest of the statement, so a name never
    stands for two statements)."""

    name: bytes
    query: bytes

    @classmethod
    def of(cls, query: bytes) -> "OneInsert":
        return cls(b"chancy_insert_" + hashlib.sha1(query).hexdigest()[:20].encode(), query)


def _text_uuid(value: uuid.UUID, encoding: str) -> bytes:
    return b"%032x" % value.int


def _text_str(value: str, encoding: str) -> bytes:
    return value.encode(encoding)


def _text_int(value: int, encoding: str) -> bytes:
    return b"%d" % value  # a bool as 1 or 0, as psycopg's bool cast to int gives


def _text_datetime(value: datetime.datetime, encoding: str) -> bytes:
    return value.isoformat().encode()


#: Each pushed column's value in Postgres' text input format (a value is sent only when it
#: differs from its column's default, so never None).
_TEXT_PARAM = {"uuid": _text_uuid, "text": _text_str, "jsonb": _text_str, "int": _text_int,
               "timestamptz": _text_datetime}
_AS_TEXT = tuple(_TEXT_PARAM[kind] for _, kind, _ in PUSHED)


class JobSQL:
    """The statements for one table prefix, composed once.

    Per-job arrays are sent in binary (``%(name)b``): psycopg dumps a list of 100 values
    in binary in well under half the time of its text form, which showed in the
    worker's per-job cost."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.pushed_channel = names.channel("pushed")
        self.done_channel = names.channel("done")
        self.cancel_channel = names.channel("cancel")
        self.queues_channel = names.channel("queues")  # runtime queue settings changed
        self.listen_done = ready(sql.SQL("LISTEN {}").format(sql.Identifier(self.done_channel)))
        f = names.fields()
        cols = sql.SQL(RECORD_COLUMNS)
        j_cols = sql.SQL(", ".join(_qualify(c) for c in RECORD_COLUMNS.split(", ")))
        self._jobs = f["jobs"]
        self._inserts: dict[tuple[tuple[int, ...], bool], bytes] = {}  # composed on first use
        self._one_inserts: dict[tuple[int, ...], OneInsert] = {}
        self._copies: dict[tuple[int, ...], sql.Composed] = {}
        self._notify_pushed = b"SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)s::text[]) AS t(queue)"
        self._live_by_unique_key = ready(sql.SQL(
            "SELECT unique_key, id FROM {jobs} WHERE unique_key = ANY(%(keys)s) AND state IN " + LIVE
        ).format(**f))
        self._get = ready(sql.SQL("SELECT {cols} FROM {jobs} WHERE id = %(id)s").format(cols=cols, **f))
        self._get_many = ready(sql.SQL("SELECT {cols} FROM {jobs} WHERE id = ANY(%(ids)s)").format(cols=cols, **f))
        self._states = ready(sql.SQL("SELECT id, state FROM {jobs} WHERE id = ANY(%(ids)s)").format(**f))
        # One statement claims up to `limit` jobs: the best runnable-now rows and the
        # earliest due scheduled/retrying rows, each read through its own partial index.
        # The chosen rows are then updated by id = ANY(ARRAY(...)), never by a join: the
        # planner sized a join with them from the backlog and, once the table had
        # statistics and was mostly runnable, hash-joined them against a sequential scan
        # of the whole table on every claim. An id array is always read through the key.
        # The queue's runtime settings row (if any) bounds the claim: none while paused;
        # with a rate limit, at most rate_limit starts in any rate_period seconds across
        # all workers. Only a rate-limited queue's row is locked (so its claims take
        # turns); others pay one primary-key read. rate_starts keeps the latest
        # rate_limit start times: enough to count any window exactly.
        claim = """
            settings AS (
                SELECT paused_until > now() AS paused FROM {queues} WHERE name = %(queue)s
            ), limiter AS (
                SELECT name, rate_limit, rate_period, rate_starts FROM {queues}
                WHERE name = %(queue)s AND rate_limit IS NOT NULL
                FOR UPDATE
            ), budget AS (
                SELECT CASE
                    WHEN coalesce((SELECT paused FROM settings), false) THEN 0
                    WHEN NOT EXISTS (SELECT 1 FROM limiter) THEN %(limit)s
                    ELSE (SELECT greatest(0, least(%(limit)s, l.rate_limit - (
                              SELECT count(*) FROM unnest(l.rate_starts) s
                              WHERE s > now() - make_interval(secs => l.rate_period))))
                          FROM limiter l)
                END AS n
            ), ready AS (
                SELECT id, priority FROM {jobs}
                WHERE queue = %(queue)s AND state = 'pending' AND (SELECT n FROM budget) > 0
                ORDER BY priority DESC, id
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ), due AS (
                SELECT id, priority FROM {jobs}
                WHERE queue = %(queue)s AND state IN ('scheduled', 'retrying')
                  AND scheduled_at <= now() AND (SELECT n FROM budget) > 0
                ORDER BY scheduled_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ), chosen AS (
                SELECT id FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
                ORDER BY priority DESC, id
                LIMIT (SELECT n FROM budget)
            ), claimed AS (
                UPDATE {jobs} j SET
                    state = CASE WHEN j.expires_at <= now() THEN 'expired' ELSE 'running' END,
                    attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
                    completed_at = CASE WHEN j.expires_at <= now() THEN now() END,
                    started_at = CASE WHEN j.expires_at <= now()
                                        OR j.id = ANY(ARRAY(SELECT id FROM chosen LIMIT %(start)s)) THEN now() END,
                    taken_by = %(worker)s
                WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
                RETURNING {j_cols}
            ), counted AS (
                UPDATE {queues} q SET rate_starts = (
                    SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') FROM (
                        SELECT s FROM unnest(q.rate_starts || array_fill(now(), ARRAY[
                            (SELECT count(*) FROM claimed WHERE state = 'running')::int])) s
                        ORDER BY s DESC
                        LIMIT q.rate_limit
                    ) latest)
                FROM limiter l
                WHERE q.name = l.name
            )"""
        self._notify_done = _announce_done("unnest(%(ids)s::uuid[]) AS t(id)").encode()
        # Outcomes of one worker, many jobs per statement. The guard (still running, still
        # ours) makes a late or duplicate write-back change nothing. Waiters hear of finished
        # jobs (the batch in one notification); workers hear of retries that are due now, as
        # they would of a push, instead of finding them at their next poll. A data-modifying
        # CTE runs even when no one reads it, but `announced` does not: the final SELECT
        # reads it once, as a filter that is always true.
        write_back = """
            input AS (
                SELECT * FROM unnest(
                    %(ids)b::uuid[], %(states)b::text[], %(results)b::jsonb[],
                    %(errors)b::jsonb[], %(delays)b::float8[], %(max_attempts)b::int[], %(attempts)b::int[]
                ) AS t(id, state, result, error, delay, max_attempts, attempt)
            ), updated AS (
                UPDATE {jobs} j SET
                    state = i.state,
                    result = COALESCE(i.result, j.result),
                    errors = CASE WHEN i.error IS NULL THEN j.errors
                                  ELSE j.errors || jsonb_build_array(
                                      i.error || jsonb_build_object('attempt', j.attempts))
                             END,
                    scheduled_at = CASE WHEN i.state = 'retrying'
                                        THEN now() + make_interval(secs => i.delay)
                                        ELSE j.scheduled_at END,
                    max_attempts = COALESCE(i.max_attempts, j.max_attempts),
                    started_at = COALESCE(j.started_at, now()),
                    completed_at = CASE WHEN i.state = 'retrying' THEN NULL ELSE now() END
                FROM input i
                WHERE j.id = i.id AND j.state = 'running' AND j.taken_by = %(worker)s
                  AND (i.attempt IS NULL OR j.attempts = i.attempt)
                RETURNING j.id, j.state,
                          CASE WHEN j.state = 'retrying' AND i.delay <= 0 THEN pg_notify(%(pushed_channel)s, j.queue) END
            ), announced AS (
                """ + _announce_done("updated WHERE state <> 'retrying'") + """
            )"""
        announced = "WHERE (SELECT count(*) FROM announced) >= 0"
        self._claim = ready(sql.SQL(f"WITH {claim} SELECT * FROM claimed").format(j_cols=j_cols, **f))
        self._write_back = ready(sql.SQL(f"WITH {write_back} SELECT id FROM updated {announced}").format(**f))
        # A draining worker's outcomes and its next claim: one statement, one commit. The
        # two updates touch different rows (ours running; others runnable).
        self._write_back_and_claim = ready(sql.SQL(f"WITH {write_back}, {claim} SELECT * FROM claimed {announced}").format(
            j_cols=j_cols, **f))
        self._cancel = ready(sql.SQL(
            """
            WITH target AS (
                SELECT id, state FROM {jobs} WHERE id = %(id)s FOR UPDATE
            ), cancelled AS (
                UPDATE {jobs} j SET state = 'cancelled', completed_at = now()
                FROM target
                WHERE j.id = target.id AND target.state IN """
            + LIVE
            + """
                RETURNING j.id, target.state AS was
            )
            SELECT was, pg_notify(%(cancel_channel)s, id::text),
                   pg_notify(%(done_channel)s, id::text)
            FROM cancelled
            """
        ).format(**f))
        # Rows running under a worker's id that the worker does not know of. Either it
        # lost the answer of the claim that took them, so they never started: back to
        # pending, the attempt refunded. Or (``lost``) they are a previous life's of a
        # worker that restarted under the same id: that attempt counts, as recovery's,
        # unless the job was only prefetched, never started (``started_at`` NULL). A job
        # that goes back pending never ran here: its start (written by its claim or a mark
        # before the worker handed it over) is cleared.
        self._release_unknown = ready(sql.SQL(
            """
            WITH stray AS (
                SELECT id FROM {jobs}
                WHERE state = 'running' AND taken_by = %(worker)s AND queue = %(queue)s
                  AND NOT id = ANY(%(owned)s::uuid[])
                FOR UPDATE SKIP LOCKED
            ), released AS (
                UPDATE {jobs} j SET
                    state = CASE WHEN NOT (%(lost)s AND j.started_at IS NOT NULL) THEN 'pending'
                                 WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'failed' END,
                    attempts = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN j.attempts ELSE greatest(j.attempts - 1, 0) END,
                    scheduled_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN now() ELSE j.scheduled_at END,
                    completed_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) AND j.attempts >= j.max_attempts THEN now() END,
                    started_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN j.started_at END,
                    taken_by = NULL,
                    errors = CASE WHEN NOT (%(lost)s AND j.started_at IS NOT NULL) THEN j.errors ELSE j.errors || jsonb_build_array(jsonb_build_object(
                        'type', 'chancy.WorkerLost',
                        'message', format('worker %%s restarted while running attempt %%s of %%s',
                                          j.taken_by, j.attempts, j.max_attempts),
                        'traceback', NULL, 'at', now(), 'attempt', j.attempts, 'worker', j.taken_by)) END
                WHERE j.id = ANY(ARRAY(SELECT id FROM stray))
                RETURNING j.id, j.queue, j.state
            )
            SELECT id, CASE WHEN state = 'failed' THEN pg_notify(%(done_channel)s, id::text)
                            ELSE pg_notify(%(channel)s, queue) END
            FROM released
            """
        ).format(**f))
        self._requeue = ready(sql.SQL(
            """
            WITH requeued AS (
                UPDATE {jobs} SET state = 'pending', scheduled_at = now(), completed_at = NULL,
                    taken_by = NULL, max_attempts = GREATEST(max_attempts, attempts + 1)
                WHERE id = %(id)s AND state IN ('failed', 'cancelled', 'expired')
                RETURNING id, queue
            )
            SELECT id, pg_notify(%(channel)s, queue) FROM requeued
            """
        ).format(**f))

    # --- statement builders ----------------------------------------------------------
    def insert(self, jobs: Sequence[Job], ids: Sequence[uuid.UUID]) -> Statement:
        rows = [_pushed_values(job_id, job) for job_id, job in zip(ids, jobs)]
        sent, many = _sent(rows), len(rows) > 1
        query = self._inserts.get((sent, many))
        if query is None:
            query = self._inserts[sent, many] = _insert_query(self._jobs, self.pushed_channel, sent, many)
        if many:
            params = {PUSHED[i][0]: [row[i] for row in rows] for i in sent}
        else:
            params = {PUSHED[i][0]: rows[0][i] for i in sent}
        return Statement(query, params, _inserted_ids)

    def insert_one(self, job_id: uuid.UUID, job: Job, encoding: str = "utf-8") -> tuple[OneInsert, list[bytes]]:
        """The INSERT of one job without a unique key, and its parameters ready for libpq:
        what a single push sends, with none of psycopg's per-statement adaptation."""
        row = _pushed_values(job_id, job)
        sent = [0, 1, 2]  # the _ALWAYS columns: id, queue, func
        params = [b"%032x" % job_id.int, job.queue.encode(encoding), job.func.encode(encoding)]
        for i in _OPTIONAL:  # as _sent and _AS_TEXT, in one pass: this runs on every push
            if row[i] != PUSHED[i][2]:
                sent.append(i)
                params.append(_AS_TEXT[i](row[i], encoding))
        insert = self._one_inserts.get(key := tuple(sent))
        if insert is None:
            insert = self._one_inserts[key] = OneInsert.of(
                _insert_query(self._jobs, self.pushed_channel, key, False, positional=True))
        return insert, params

    @staticmethod
    def copyable(jobs: Sequence[Job]) -> bool:
        return len(jobs) >= COPY_MIN_JOBS and all(map(_plainly_pending, jobs))

    def copy(self, jobs: Sequence[Job], ids: Sequence[uuid.UUID]) -> Statement:
        """COPY of :meth:`copyable` jobs (of the columns they set); follow it with
        :meth:`notify_pushed`, in the same transaction."""
        rows = list(map(_pushed_values, ids, jobs))
        sent = _sent(rows)
        query = self._copies.get(sent)
        if query is None:
            query = self._copies[sent] = sql.SQL("COPY {} ({}) FROM STDIN").format(
                self._jobs, sql.SQL(", ").join(sql.Identifier(PUSHED[i][0]) for i in sent))
        lines = ["\t".join([_copy_field(row[i]) for i in sent]) + "\n" for row in rows]
        return Statement(query, {}, copy_data=map("".join, _chunks(lines)))

    @staticmethod
    def copyable_calls(template: Job, count: int) -> bool:
        return count >= COPY_MIN_JOBS and _plainly_pending(template)

    def copy_calls(self, template: Job, calls: Sequence[Sequence[Any]], ids: list[uuid.UUID]) -> Statement:
        """COPY of one job per call of a :meth:`copyable_calls` ``template`` (each call its
        positional arguments): no :class:`Job` per call, and rows (and their ids, appended
        to ``ids``) are made chunk by chunk as the driver writes them, so the server parses
        one chunk while the next is made. Follow it with :meth:`notify_pushed`."""
        values = _pushed_values(None, template)
        sent = _sent([values[:_ARGS] + ("[0]",) + values[_ARGS + 1:]])  # args always sent
        query = self._copies.get(sent)
        if query is None:
            query = self._copies[sent] = sql.SQL("COPY {} ({}) FROM STDIN").format(
                self._jobs, sql.SQL(", ").join(sql.Identifier(PUSHED[i][0]) for i in sent))
        head = "".join(_copy_field(value) + "\t" for value in values[1:_ARGS])
        tail = "".join("\t" + _copy_field(values[i]) for i in sent[_ARGS + 1:]) + "\n"
        func = template.func

        def data() -> Iterator[str]:
            for chunk in _chunks(calls):
                made = new_job_ids(len(chunk))
                ids.extend(made)
                yield "".join([f"{job_id.int:032x}\t{head}{_args_json(func, args).translate(_COPY_ESCAPES)}{tail}"
                               for job_id, args in zip(made, chunk)])

        return Statement(query, {}, copy_data=data())

    def notify_pushed(self, queues: Sequence[str]) -> Statement:
        return Statement(self._notify_pushed, {"channel": self.pushed_channel, "queues": list(queues)})

    def live_by_unique_key(self, keys: Sequence[str]) -> Statement:
        return Statement(self._live_by_unique_key, {"keys": list(keys)}, dict)

    def get(self, job_id: uuid.UUID) -> Statement:
        return Statement(self._get, {"id": job_id}, _first_record)

    def get_many(self, job_ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self._get_many, {"ids": list(job_ids)}, _records)

    def states(self, ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self._states, {"ids": list(ids)}, lambda rows: {r[0]: JobState(r[1]) for r in rows})

    def claim(self, queue: str, worker_id: str, limit: int, finished: Sequence[Transition] = (),
              start: int | None = None) -> Statement:
        """Claim up to ``limit`` jobs, first writing the ``finished`` outcomes (which must
        have no follow-ups: this statement does not say which outcomes applied). Only the
        best ``start`` of them (None: all) get ``started_at``; the others are prefetched,
        not started (``started_at`` NULL) until the worker marks them or writes their outcome."""
        params = {"queue": queue, "worker": worker_id, "limit": limit, "start": start}
        if not finished:
            return Statement(self._claim, params, _records)
        return Statement(self._write_back_and_claim, self.write_back(worker_id, finished).params | params, _records)

    def notify_done(self, ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self._notify_done, {"ids": list(ids), "channel": self.done_channel})

    def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> Statement:
        params: dict[str, Any] = {
            "ids": [t.job_id for t in transitions],
            "states": [t.state.value for t in transitions],
            "results": [t.result_json for t in transitions],
            "errors": [serialization.dumps(t.error) if t.error else None for t in transitions],
            "delays": [t.delay for t in transitions],
            "max_attempts": [t.max_attempts for t in transitions],
            "attempts": [t.attempt for t in transitions],
            "worker": worker_id,
            "channel": self.done_channel,
            "pushed_channel": self.pushed_channel,
        }
        return Statement(self._write_back, params, lambda rows: {row[0] for row in rows})

    def cancel(self, job_id: uuid.UUID) -> Statement:
        params = {"id": job_id, "cancel_channel": self.cancel_channel, "done_channel": self.done_channel}
        return Statement(self._cancel, params, lambda rows: bool(rows))

    def release_unknown(self, queue: str, worker_id: str, owned: Iterable[uuid.UUID], lost: bool) -> Statement:
        params = {"queue": queue, "worker": worker_id, "owned": list(owned), "lost": lost,
                  "channel": self.pushed_channel, "done_channel": self.done_channel}
        return Statement(self._release_unknown, params, lambda rows: [row[0] for row in rows])

    def requeue(self, job_id: uuid.UUID) -> Statement:
        return Statement(self._requeue, {"id": job_id, "channel": self.pushed_channel}, lambda rows: bool(rows))


#: Finished jobs are announced on the done channel a batch at a time: one notification
#: lists up to this many ids, comma-separated (a payload must stay under 8,000 bytes). One
#: per job cost every listening process a callback per job, and the server a queue entry.
DONE_IDS_PER_NOTIFICATION = 100


def finished_ids(payload: str) -> list[str]:
    """The job ids one notification on the done channel announces."""
    return payload.split(",")


def _announce_done(source: str) -> str:
    """A query announcing the finished jobs of ``source`` (rows with an ``id``)."""
    return ("SELECT pg_notify(%(channel)s, string_agg(id::text, ',')) FROM ("
            f"SELECT id, (row_number() OVER () - 1) / {DONE_IDS_PER_NOTIFICATION} AS part FROM {source}"
            ") finished GROUP BY part")


def _inserted_ids(rows: list[tuple]) -> set[uuid.UUID]:
    return {row[0] for row in rows}


def _qualify(column: str) -> str:
    return f"j.{column}"


def _pushed_values(job_id: uuid.UUID, job: Job) -> tuple:
    """One job's values in :data:`PUSHED` order."""
    args_json, kwargs_json = serialization.dumps_arguments(job.func, job.args, job.kwargs)
    return (
        job_id, job.queue, job.func, args_json, kwargs_json, job.priority, job.max_attempts,
        job.scheduled_at, job.expires_at, job.unique_key,
        serialization.dumps([lim.to_dict() for lim in job.limits]) if job.limits else "[]",
        serialization.dumps(job.backoff.to_dict()) if job.backoff else None,
        _dumps_meta(job) if job.meta else "{}",
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    """One pushed value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, uuid.UUID):
        return f"{value.int:032x}"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(int(value))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), COPY_CHUNK):
        yield items[start:start + COPY_CHUNK]


def _plainly_pending(job: Job) -> bool:
    """No unique key and no schedule: the row is simply pending (what COPY can write)."""
    return job.unique_key is None and job.scheduled_at is None


def _args_json(func: str, args: Sequence[Any]) -> str:
    """One call's positional arguments as JSON, checked as :class:`Job` checks them."""
    if not is_argument_list(args):
        raise TypeError(f"each call of {func!r} must be a list or tuple of arguments, got {type(args).__name__}")
    return serialization.dumps_arguments(func, args, {})[0]


def _dumps_meta(job: Job) -> str:
    try:
        return serialization.dumps(dict(job.meta))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"Job meta of task {job.func!r} cannot be stored as JSON: {exc}") from None
