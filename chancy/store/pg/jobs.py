"""The jobs table's statements (``sql/jobs.sql``) for one table prefix, the parameters
they are sent and the records they return (:func:`record_from_row`, the one mapping from a
row to a :class:`~chancy.job.JobRecord`), and the operations written with them
(``*_steps``), driven by :mod:`chancy.store.pg.job_store` or a caller's transaction.
Nothing here does I/O by itself."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, cast

from psycopg import sql

from chancy import serialization
from chancy.job import (Backoff, Job, JobRecord, JobState, Limit, UndecodableRecord, is_argument_list,
                        new_job_ids)
from chancy.migrations import Names
from chancy.store.pg.statements import Atomic, SqlFile, Statement, Steps, ready

if TYPE_CHECKING:
    from chancy.queue import Transition

# Column order of every statement of sql/jobs.sql that returns whole jobs (what
# record_from_row maps); jsonb is read as text and decoded by our own serializer so tagged
# values (datetime, UUID…) come back typed.
RECORD_COLUMNS = (
    "id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts, "
    "scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key, "
    "limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency"
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
        concurrency_key=row[21],
        concurrency=row[22],
    )


def _undecodable_record(row: Sequence[Any], exc: Exception) -> UndecodableRecord:
    """What can be read of a row that failed to decode: its plain columns, no arguments,
    limits, meta or result; its errors kept if they decode (a failure appends to them)."""
    try:
        errors = serialization.loads(row[20])
    except Exception:  # noqa: BLE001
        errors = []
    errors_text = row[20] if isinstance(errors, list) else "[]"
    readable = _decoded_record((*row[:3], "[]", "{}", *row[5:16], "[]", None, "{}", None, errors_text, *row[21:23]))
    record = cast(UndecodableRecord, UndecodableRecord.from_fields(**readable.__dict__))
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
    ("backoff", "jsonb", None), ("meta", "jsonb", "{}"), ("concurrency_key", "text", None),
    ("concurrency", "int", None),
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
    columns = list(zip(*rows, strict=True))  # counting a default in a column runs in C
    return tuple(range(_ALWAYS)) + tuple(i for i in _OPTIONAL if columns[i].count(PUSHED[i][2]) != len(rows))


def _insert_query(statements: SqlFile, channel: str, sent: tuple[int, ...], many: bool,
                  positional: bool = False) -> bytes:
    """The INSERT of the ``sent`` columns, assembled from the parts of ``sql/jobs.sql``
    (see the comment above ``insert_values`` there): ``INSERT … VALUES`` of one job's
    parameters, or ``INSERT … SELECT … FROM unnest`` of one array per column for many.
    Each value is its placeholder cast to its column's type. ``positional``: one job's,
    with libpq's ``$1, $2…`` in ``sent`` order instead of psycopg's named placeholders
    (for :meth:`JobSQL.insert_one`)."""
    columns = [PUSHED[i][0] for i in sent]
    if many:
        value: dict[str, sql.Composable] = {c: sql.Identifier(c) for c in columns}
    else:
        value = {PUSHED[i][0]: sql.SQL("{}::{}").format(
                     sql.SQL(f"${position}") if positional else sql.Placeholder(PUSHED[i][0]), sql.SQL(PUSHED[i][1]))
                 for position, i in enumerate(sent, 1)}
    targets, values = list(columns), [value[c] for c in columns]
    if "scheduled_at" in value:
        at = value["scheduled_at"]
        values[columns.index("scheduled_at")] = statements.composed("insert_scheduled_at", at=at)
        targets.append("state")
        values.append(statements.composed("insert_scheduled_state", at=at))
    parts = {"columns": sql.SQL(", ").join(map(sql.Identifier, targets)), "values": sql.SQL(", ").join(values)}
    if many:
        parts["arrays"] = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(PUSHED[i][0], "b"), sql.SQL(PUSHED[i][1])) for i in sent)
        parts["names"] = sql.SQL(", ").join(map(sql.Identifier, columns))
    query = [statements.composed("insert_unnest" if many else "insert_values", **parts)]
    if "unique_key" in value:
        query.append(statements.composed("insert_unique_key"))
    query.append(statements.composed("insert_returning", pushed_channel=sql.Literal(channel)))
    return ready(sql.SQL("\n").join(query))


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
_TEXT_PARAM: dict[str, Callable[[Any, str], bytes]] = {
    "uuid": _text_uuid, "text": _text_str, "jsonb": _text_str, "int": _text_int, "timestamptz": _text_datetime}
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
        self.statements = SqlFile("jobs.sql", names.fields())
        self.listen_done = ready(self.statements.composed("listen_done",
                                                          done_channel=sql.Identifier(self.done_channel)))
        self.unlisten_all = self.statements["unlisten_all"]
        self._inserts: dict[tuple[tuple[int, ...], bool], bytes] = {}  # composed on first use
        self._one_inserts: dict[tuple[int, ...], OneInsert] = {}
        self._copies: dict[tuple[int, ...], bytes] = {}
        #: Queues last seen with keyed jobs waiting: their claims take the keyed path.
        self.keyed_queues: set[str] = set()
        #: Queues whose keyed claims take turns between keys (``Queue(..., fair_keys=True)``).
        self.fair_queues: set[str] = set()
        self._keyed_locks: dict[str, int] = {}

    # --- statement builders ----------------------------------------------------------
    def insert(self, jobs: Sequence[Job], ids: Sequence[uuid.UUID]) -> Statement:
        rows = [pushed_values(job_id, job) for job_id, job in zip(ids, jobs, strict=True)]
        sent, many = _sent(rows), len(rows) > 1
        query = self._inserts.get((sent, many))
        if query is None:
            query = self._inserts[sent, many] = _insert_query(self.statements, self.pushed_channel, sent, many)
        if many:
            params = {PUSHED[i][0]: [row[i] for row in rows] for i in sent}
        else:
            params = {PUSHED[i][0]: rows[0][i] for i in sent}
        return Statement(query, params, _inserted_ids)

    def insert_one(self, job_id: uuid.UUID, job: Job, encoding: str = "utf-8") -> tuple[OneInsert, list[bytes]]:
        """The INSERT of one job without a unique key, and its parameters ready for libpq:
        what a single push sends, with none of psycopg's per-statement adaptation."""
        row = pushed_values(job_id, job)
        sent = [0, 1, 2]  # the _ALWAYS columns: id, queue, func
        params = [b"%032x" % job_id.int, job.queue.encode(encoding), job.func.encode(encoding)]
        for i in _OPTIONAL:  # as _sent and _AS_TEXT, in one pass: this runs on every push
            if row[i] != PUSHED[i][2]:
                sent.append(i)
                params.append(_AS_TEXT[i](row[i], encoding))
        insert = self._one_inserts.get(key := tuple(sent))
        if insert is None:
            insert = self._one_inserts[key] = OneInsert.of(
                _insert_query(self.statements, self.pushed_channel, key, False, positional=True))
        return insert, params

    @staticmethod
    def copyable(jobs: Sequence[Job]) -> bool:
        return len(jobs) >= COPY_MIN_JOBS and all(map(_plainly_pending, jobs))

    def copy(self, jobs: Sequence[Job], ids: Sequence[uuid.UUID]) -> Statement:
        """COPY of :meth:`copyable` jobs (of the columns they set); follow it with
        :meth:`notify_pushed`, in the same transaction."""
        rows = list(map(pushed_values, ids, jobs))
        sent = _sent(rows)
        query = self._copies.get(sent)
        if query is None:
            query = self._copies[sent] = ready(self.statements.composed(
                "copy", columns=sql.SQL(", ").join(sql.Identifier(PUSHED[i][0]) for i in sent)))
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
        values = pushed_values(None, template)
        sent = _sent([values[:_ARGS] + ("[0]",) + values[_ARGS + 1:]])  # args always sent
        query = self._copies.get(sent)
        if query is None:
            query = self._copies[sent] = ready(self.statements.composed(
                "copy", columns=sql.SQL(", ").join(sql.Identifier(PUSHED[i][0]) for i in sent)))
        head = "".join(_copy_field(value) + "\t" for value in values[1:_ARGS])
        tail = "".join("\t" + _copy_field(values[i]) for i in sent[_ARGS + 1:]) + "\n"
        func = template.func

        def data() -> Iterator[str]:
            for chunk in _chunks(calls):
                made = new_job_ids(len(chunk))
                ids.extend(made)
                yield "".join([f"{job_id.int:032x}\t{head}{_args_json(func, args).translate(_COPY_ESCAPES)}{tail}"
                               for job_id, args in zip(made, chunk, strict=True)])

        return Statement(query, {}, copy_data=data())

    def notify_pushed(self, queues: Sequence[str]) -> Statement:
        return Statement(self.statements["notify_pushed"], {"channel": self.pushed_channel, "queues": list(queues)})

    def live_by_unique_key(self, keys: Sequence[str]) -> Statement:
        return Statement(self.statements["live_by_unique_key"], {"keys": list(keys)}, dict)

    def get(self, job_id: uuid.UUID) -> Statement:
        return Statement(self.statements["get"], {"id": job_id}, _first_record)

    def get_many(self, job_ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self.statements["get_many"], {"ids": list(job_ids)}, _records)

    def states(self, ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self.statements["states"], {"ids": list(ids)},
                         lambda rows: {r[0]: JobState(r[1]) for r in rows})

    def claim(self, queue: str, worker_id: str, limit: int, finished: Sequence[Transition] = (),
              start: int | None = None) -> Statement:
        """Claim up to ``limit`` jobs, first writing the ``finished`` outcomes (which must
        have no follow-ups: this statement does not say which outcomes applied). Only the
        best ``start`` of them (None: all) get ``started_at``; the others are prefetched,
        not started (``started_at`` NULL) until the worker marks them or writes their outcome."""
        params = {"queue": queue, "worker": worker_id, "limit": limit, "start": start}
        if not finished:
            return Statement(self.statements["claim"], params, _plain_claim)
        params |= self.write_back(worker_id, finished).params
        return Statement(self.statements["write_back_and_claim"], params, _plain_claim)

    def claim_keyed(self, queue: str, worker_id: str, limit: int, finished: Sequence[Transition] = (),
                    start: int | None = None, *, by_key: bool = False) -> Atomic:
        """A keyed claim (see ``claim_keyed`` in ``sql/jobs.sql``): in one transaction and
        one round trip, the ``finished`` outcomes, the queue's keyed-claim lock and the
        claim: of the queue's front (``claim_keyed``), or ``by_key``, each key's best jobs
        up to its free places (``claim_keyed_heads``, round-robin between keys in a fair
        queue). Sent ``[..., (records, crowded, blocked, keyed)]``."""
        lock = self._keyed_locks.get(queue)
        if lock is None:
            lock = self._keyed_locks[queue] = self.names.advisory_key(f"concurrency:{queue}")
        params: dict[str, Any] = {"queue": queue, "worker": worker_id, "limit": limit, "start": start}
        if by_key:
            params["fair"] = queue in self.fair_queues
        statement = self.statements["claim_keyed_heads" if by_key else "claim_keyed"]
        steps = [Statement(self.statements["claim_keyed_lock"], {"lock": lock}),
                 Statement(statement, params, _keyed_claim)]
        return Atomic((self.write_back(worker_id, finished), *steps) if finished else tuple(steps))

    def keyed_waiting(self, queue: str) -> Statement:
        return Statement(self.statements["keyed_waiting"], {"queue": queue}, lambda rows: bool(rows[0][0]))

    def notify_done(self, ids: Sequence[uuid.UUID]) -> Statement:
        return Statement(self.statements["notify_done"], {"ids": list(ids), "channel": self.done_channel})

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
        return Statement(self.statements["write_back"], params, lambda rows: {row[0] for row in rows})

    def cancel(self, job_id: uuid.UUID) -> Statement:
        params = {"id": job_id, "cancel_channel": self.cancel_channel, "done_channel": self.done_channel}
        return Statement(self.statements["cancel"], params, lambda rows: bool(rows))

    def release_unknown(self, queue: str, worker_id: str, owned: Iterable[uuid.UUID], lost: bool) -> Statement:
        params = {"queue": queue, "worker": worker_id, "owned": list(owned), "lost": lost,
                  "channel": self.pushed_channel, "done_channel": self.done_channel}
        return Statement(self.statements["release_unknown"], params, lambda rows: [row[0] for row in rows])

    def requeue(self, job_id: uuid.UUID) -> Statement:
        return Statement(self.statements["requeue"], {"id": job_id, "channel": self.pushed_channel},
                         lambda rows: bool(rows))


#: Finished jobs are announced on the done channel a batch at a time: one notification
#: lists up to this many ids, comma-separated (a payload must stay under 8,000 bytes). One
#: per job cost every listening process a callback per job, and the server a queue entry.
#: (Written as ``/ 100`` in the statements of ``sql/jobs.sql`` that announce.)
DONE_IDS_PER_NOTIFICATION = 100


def finished_ids(payload: str) -> list[str]:
    """The job ids one notification on the done channel announces."""
    return payload.split(",")


#: Where a claim's rows carry their flag, after the record columns.
_FLAG = RECORD_COLUMNS.count(",") + 1


def _plain_claim(rows: list[tuple]) -> tuple[list[JobRecord], bool | None]:
    """The claimed jobs, and whether keyed jobs wait in the queue (None: no row to say)."""
    return _records(rows), rows[0][_FLAG] if rows else None


def _keyed_claim(rows: list[tuple]) -> tuple[list[JobRecord], bool, bool, bool]:
    """The claimed jobs, whether a candidate of a free key was left for want of places,
    whether rows of full keys took places of its read, and whether keyed jobs still wait
    (its one row of NULL jobs says so when it claimed none)."""
    return (_records([row for row in rows if row[0] is not None]), rows[0][_FLAG], rows[0][_FLAG + 1],
            rows[0][_FLAG + 2])


def _inserted_ids(rows: list[tuple]) -> set[uuid.UUID]:
    return {row[0] for row in rows}


def pushed_values(job_id: uuid.UUID | None, job: Job) -> tuple:
    """One job's values in :data:`PUSHED` order."""
    args_json, kwargs_json = serialization.dumps_arguments(job.func, job.args, job.kwargs)
    return (
        job_id, job.queue, job.func, args_json, kwargs_json, job.priority, job.max_attempts,
        job.scheduled_at, job.expires_at, job.unique_key,
        serialization.dumps([lim.to_dict() for lim in job.limits]) if job.limits else "[]",
        serialization.dumps(job.backoff.to_dict()) if job.backoff else None,
        serialization.dumps_meta(job.func, job.meta) if job.meta else "{}",
        job.concurrency_key, job.concurrency,
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


# --- operations (each a generator of statements: see chancy.store.pg.statements) ---------
#: How often a push retries the jobs whose unique key changed hands under it.
UNIQUE_RETRIES = 5


def push_steps(statements: JobSQL, jobs: Sequence[Job]) -> Steps:
    """Insert jobs; a job whose unique key is taken by a live job gets that job's id.
    Run it in a transaction when ``statements.copyable(jobs)``: it copies, then notifies."""
    fresh = iter(new_job_ids(sum(job.id is None for job in jobs)))
    ids = [job.id or next(fresh) for job in jobs]
    if statements.copyable(jobs):
        yield statements.copy(jobs, ids)
        yield statements.notify_pushed(sorted({job.queue for job in jobs}))
        return ids
    todo = list(range(len(jobs)))
    for _ in range(UNIQUE_RETRIES):
        inserted = yield statements.insert([jobs[i] for i in todo], [ids[i] for i in todo])
        duplicates = [i for i in todo if ids[i] not in inserted]
        if not duplicates:
            return ids
        if any(jobs[i].unique_key is None for i in duplicates):
            raise RuntimeError("job ids collided on insert; pass unique ids or none")
        keys = [key for i in duplicates if (key := jobs[i].unique_key) is not None]  # all: checked above
        live = yield statements.live_by_unique_key(keys)
        for i in duplicates:
            if jobs[i].unique_key in live:
                ids[i] = live[jobs[i].unique_key]
        # A live holder that finished between the insert and the lookup frees its key.
        todo = [i for i in duplicates if jobs[i].unique_key not in live]
        if not todo:
            return ids
    raise RuntimeError("unique_key kept changing hands while pushing; try again")


def push_calls_steps(statements: JobSQL, template: Job, calls: Sequence[Sequence[Any]]) -> Steps:
    """COPY one job per call of ``template`` (run it in a transaction), then notify."""
    ids: list[uuid.UUID] = []
    yield statements.copy_calls(template, calls, ids)
    yield statements.notify_pushed([template.queue])
    return ids


def claim_steps(statements: JobSQL, queue: str, worker_id: str, limit: int,
                finished: Sequence[Transition] = (), start: int | None = None) -> Steps:
    """Claim (writing ``finished`` outcomes without follow-ups in the same statement).
    A short claim means a drained queue to the worker, which then waits its polling
    interval, so it claims again for the places left while its claim came short with
    claimable jobs left: expired rows it finished (they take places of its LIMIT), jobs of
    a free key it had no places for (crowded), rows of full keys that filled the read of
    the queue's front (blocked: then key by key, past any backlog), or keyed jobs that the
    plain claim leaves to the keyed one. A queue's claims take the keyed path while it has
    keyed jobs waiting (what every claim reports), the plain one (today's statement,
    untouched) otherwise; a fair queue's keyed claims always go key by key."""
    claimed: list[JobRecord] = []
    by_key = queue in statements.fair_queues
    while True:
        wanted = limit - len(claimed)
        keyed_path = queue in statements.keyed_queues
        crowded = blocked = False
        if keyed_path:
            *_, (records, crowded, blocked, keyed) = yield statements.claim_keyed(
                queue, worker_id, wanted, finished, start, by_key=by_key)
        else:
            records, keyed = yield statements.claim(queue, worker_id, wanted, finished, start)
            if keyed is None:
                keyed = yield statements.keyed_waiting(queue)
        finished = ()
        (statements.keyed_queues.add if keyed else statements.keyed_queues.discard)(queue)
        claimed += [r for r in records if r.state is JobState.RUNNING]
        expired = [r.id for r in records if r.state is JobState.EXPIRED]
        if expired:
            yield statements.notify_done(expired)
        if start is not None:
            start = max(0, start - sum(r.state is JobState.RUNNING and r.started_at is not None for r in records))
        short = len(records) - len(expired) < wanted
        if len(claimed) >= limit or not (expired or crowded or (short and blocked)
                                         or (short and keyed and not keyed_path)):
            return claimed
        by_key = by_key or blocked


def write_back_steps(statements: JobSQL, worker_id: str, transitions: Sequence[Transition]) -> Steps:
    """Write outcomes, then the follow-up of each transition that applied (run it in a
    transaction when any transition has one)."""
    applied = yield statements.write_back(worker_id, transitions)
    for transition in transitions:
        if transition.follow_up is not None and transition.job_id in applied:
            yield from transition.follow_up()
