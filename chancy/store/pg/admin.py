"""Statements for operators (the ``chancy`` CLI and dashboard): counts per queue and state,
workers and their heartbeat age, job listings, purging waiting jobs, and retrying,
cancelling or deleting every job a filter selects, in bounded batches. Composed like
:mod:`chancy.queues.sql` (identifiers from the prefix, values as parameters only) and run
through the same drivers."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any, Sequence, TypedDict

from psycopg import sql

from chancy.job import FINISHED_STATES, LIVE_STATES, JobState
from chancy.migrations import Names
from chancy.queues.sql import DONE_IDS_PER_NOTIFICATION, RECORD_COLUMNS, record_from_row
from chancy.store.pg.statements import Statement, Steps

#: States ``purge`` may delete: never ``running`` (a worker holds those rows).
PURGEABLE_STATES = frozenset(JobState) - {JobState.RUNNING}


#: Rows one bulk statement changes at most: each batch is its own short transaction,
#: locking only its rows (and skipping rows someone else holds), never the table.
BULK_BATCH = 1000


class BulkAction(str, enum.Enum):
    RETRY = "retry"
    CANCEL = "cancel"
    DELETE = "delete"


#: The states each bulk action may touch, as the single-job actions allow: retry what
#: ended badly, cancel what has not ended (a running job's worker is told to stop it),
#: delete what has ended, or with ``force`` anything but a running job.
BULK_STATES = {
    BulkAction.RETRY: frozenset({JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}),
    BulkAction.CANCEL: LIVE_STATES,
    BulkAction.DELETE: FINISHED_STATES,
}
FORCED_DELETE_STATES = frozenset(JobState) - {JobState.RUNNING}


class BulkRefused(ValueError):
    """A bulk action asked for states it may not touch, or selected nothing at all."""


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` matched literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclasses.dataclass(frozen=True)
class JobSelection:
    """Which jobs a bulk action applies to: those matching every filter given."""

    states: tuple[JobState, ...] = ()
    queues: tuple[str, ...] = ()
    task: str | None = None  # the exact task name
    task_contains: str | None = None  # part of the task name, any case (the dashboard's filter)
    text: str | None = None  # part of the arguments as JSON text, any case
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    ids: tuple[uuid.UUID, ...] = ()

    @property
    def is_everything(self) -> bool:
        return not (self.states or self.queues or self.task or self.task_contains or self.text
                    or self.since or self.until or self.ids)

    def states_for(self, action: BulkAction, force: bool = False) -> list[str]:
        """The states ``action`` touches within this selection; refuses asked-for states
        it may not touch, rather than silently skipping them."""
        allowed = FORCED_DELETE_STATES if action is BulkAction.DELETE and force else BULK_STATES[action]
        refused = sorted(s.value for s in self.states if s not in allowed)
        if refused:
            hint = " (add force to delete waiting jobs too)" if action is BulkAction.DELETE and not force else ""
            raise BulkRefused(f"cannot {action.value} {', '.join(refused)} jobs: {action.value} applies only to "
                              f"{', '.join(sorted(s.value for s in allowed))} jobs{hint}")
        return sorted(s.value for s in (self.states or allowed))

    def params(self, action: BulkAction, force: bool) -> dict[str, Any]:
        return {
            "states": self.states_for(action, force), "queues": list(self.queues) or None, "task": self.task,
            "task_like": like_pattern(self.task_contains) if self.task_contains else None,
            "text": like_pattern(self.text) if self.text else None, "since": self.since, "until": self.until,
            "ids": list(self.ids) or None,
        }


#: The filter every bulk statement shares (see :class:`JobSelection`).
_SELECTED = """
    state = ANY(%(states)s::text[])
    AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    AND (%(task)s::text IS NULL OR func = %(task)s::text)
    AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
    AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
    AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
    AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
    AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
"""
#: What each bulk action does to a locked batch (``batch``), returning ``changed(id, queue)``,
#: and whom it tells: workers of requeued jobs' queues, workers running cancelled jobs,
#: waiters on cancelled or deleted jobs (ids batched as the worker batches them).
_DONE = ("SELECT pg_notify(%(done_channel)s, string_agg(id::text, ',')) FROM ("
         f"SELECT id, (row_number() OVER () - 1) / {DONE_IDS_PER_NOTIFICATION} AS part FROM changed"
         ") finished GROUP BY part")
_BULK_CHANGES = {
    BulkAction.RETRY: (
        "UPDATE {jobs} j SET state = 'pending', scheduled_at = now(), completed_at = NULL, taken_by = NULL,"
        " max_attempts = GREATEST(j.max_attempts, j.attempts + 1) FROM batch WHERE j.id = batch.id"
        " RETURNING j.id, j.queue",
        "SELECT pg_notify(%(pushed_channel)s, queue) FROM (SELECT DISTINCT queue FROM changed) q",
    ),
    BulkAction.CANCEL: (
        "UPDATE {jobs} j SET state = 'cancelled', completed_at = now() FROM batch WHERE j.id = batch.id"
        " RETURNING j.id, j.queue",
        "SELECT pg_notify(%(cancel_channel)s, id::text) FROM changed UNION ALL " + _DONE,
    ),
    BulkAction.DELETE: (
        "DELETE FROM {jobs} j USING batch WHERE j.id = batch.id RETURNING j.id, j.queue",
        _DONE,
    ),
}


class WorkerRow(TypedDict):
    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    tags: list[str]
    started_at: datetime
    heartbeat_age: float  # seconds since the last heartbeat, on the database clock
    alive: bool  # it promised its next heartbeat (expires_at) and that time has not passed
    running: int
    running_jobs: list[str]  # ids of the jobs it runs, oldest start first
    uptime: float  # seconds since it started, on the database clock


def _worker_row(worker_id: str, hostname: str, pid: int, queues: list[str], tags: list[str],
                started_at: datetime, heartbeat_age: float, alive: bool, running_jobs: list[str],
                uptime: float) -> WorkerRow:
    return WorkerRow(worker_id=worker_id, hostname=hostname, pid=pid, queues=queues, tags=tags,
                     started_at=started_at, heartbeat_age=heartbeat_age, alive=alive,
                     running=len(running_jobs), running_jobs=running_jobs, uptime=uptime)


@dataclasses.dataclass(frozen=True)
class TableHealth:
    live_rows: int
    dead_rows: int
    since_vacuum_seconds: float | None  # None: never vacuumed since the statistics began
    oldest_transaction_seconds: float | None  # None: no open transaction holds back vacuum

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# One row whatever happens: the table's statistics (zeros before its first count), and the
# oldest transaction of any visible session that holds a snapshot or a transaction id
# (backend_xmin, backend_xid), which is what stops vacuum from removing dead rows. Other roles' sessions show only with
# pg_read_all_stats.
_TABLE_HEALTH = sql.SQL(
    """
    SELECT coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
           extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8,
           (SELECT extract(epoch FROM now() - min(a.xact_start))::float8 FROM pg_stat_activity a
            WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.xact_start IS NOT NULL
              AND a.pid <> pg_backend_pid())
    FROM (VALUES (1)) AS one LEFT JOIN pg_stat_user_tables s ON s.relid = to_regclass(%(jobs)s)
    """
)


class AdminSQL:
    """The operator statements for one table prefix, composed once."""

    def __init__(self, names: Names) -> None:
        self.names = names
        f = names.fields()
        self._table_exists = sql.SQL("SELECT to_regclass(%(name)s) IS NOT NULL")
        # Live rows through their partial indexes (one branch per index, with its exact
        # predicate: a single IN () is planned as a full scan), with the age of the oldest
        # due waiting job; finished ones only within the window, through the index on
        # completed_at. Millions of old rows cost nothing.
        waiting_age = "extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))::float8"
        live = (
            "SELECT queue, state, count(*), " + waiting_age + " FROM {jobs} WHERE state = 'pending' GROUP BY queue, state"
            " UNION ALL SELECT queue, state, count(*), " + waiting_age + " FROM {jobs}"
            " WHERE state IN ('scheduled', 'retrying') GROUP BY queue, state"
            " UNION ALL SELECT queue, state, count(*), NULL FROM {jobs} WHERE state = 'running' GROUP BY queue, state"
        )
        self._live_counts = sql.SQL(live).format(**f)
        self._counts = sql.SQL(
            live + """
            UNION ALL
            SELECT queue, state, count(*), NULL FROM {jobs}
            WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
              AND (%(window)s::float8 IS NULL OR completed_at >= now() - make_interval(secs => %(window)s::float8))
            GROUP BY queue, state
            """
        ).format(**f)
        self._workers = sql.SQL(
            """
            SELECT w.worker_id, w.hostname, w.pid, w.queues, w.tags, w.started_at,
                   extract(epoch FROM now() - w.last_seen)::float8, w.expires_at > now(),
                   coalesce((SELECT array_agg(j.id::text ORDER BY j.started_at) FROM {jobs} j
                             WHERE j.state = 'running' AND j.taken_by = w.worker_id), '{{}}'),
                   extract(epoch FROM now() - w.started_at)::float8
            FROM {workers} w
            ORDER BY w.hostname, w.pid, w.worker_id
            """
        ).format(**f)
        self._list = sql.SQL(
            """
            SELECT {cols} FROM {jobs}
            WHERE (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
              AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
              AND (%(task)s::text IS NULL OR func = %(task)s::text)
            ORDER BY id DESC
            LIMIT %(limit)s
            """
        ).format(cols=sql.SQL(RECORD_COLUMNS), **f)
        # What `chancy inspect` shows: running jobs through the index on taken_by, and
        # jobs due later (countdown, eta, retry backoff) through the index on scheduled_at.
        self._running = sql.SQL(
            """
            SELECT {cols} FROM {jobs}
            WHERE state = 'running'
              AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
              AND (%(workers)s::text[] IS NULL OR taken_by = ANY(%(workers)s::text[]))
            ORDER BY taken_by, started_at, id
            """
        ).format(cols=sql.SQL(RECORD_COLUMNS), **f)
        self._scheduled = sql.SQL(
            """
            SELECT {cols} FROM {jobs}
            WHERE state IN ('scheduled', 'retrying') AND scheduled_at > now()
              AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
            ORDER BY scheduled_at, id
            LIMIT %(limit)s
            """
        ).format(cols=sql.SQL(RECORD_COLUMNS), **f)
        self._states_of = sql.SQL(
            "SELECT state, count(*) FROM {jobs} WHERE id = ANY(%(ids)s::uuid[]) GROUP BY state"
        ).format(**f)
        self._batch_summary = sql.SQL(
            """
            SELECT queue, func, state, count(*), count(*) FILTER (WHERE attempts > 1),
                   (avg(extract(epoch FROM completed_at - started_at)) * 1000)::float8
            FROM {jobs} WHERE id = ANY(%(ids)s::uuid[])
            GROUP BY queue, func, state ORDER BY queue, func, state
            """
        ).format(**f)
        self._bulk_count = sql.SQL("SELECT count(*) FROM {jobs} WHERE " + _SELECTED).format(**f)
        self._bulk = {
            action: sql.SQL(
                "WITH batch AS (SELECT id FROM {jobs} WHERE " + _SELECTED + " AND id > %(after)s::uuid"
                " ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED),"
                " changed AS (" + change + "), told AS (" + tell + ")"
                " SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM batch),"
                " (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM told)"
            ).format(**f)
            for action, (change, tell) in _BULK_CHANGES.items()
        }
        self._channels = {"pushed_channel": names.channel("pushed"), "cancel_channel": names.channel("cancel"),
                          "done_channel": names.channel("done")}
        self._purge = sql.SQL(
            """
            WITH purged AS (
                DELETE FROM {jobs}
                WHERE state = ANY(%(states)s::text[])
                  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
                RETURNING queue
            )
            SELECT queue, count(*) FROM purged GROUP BY queue ORDER BY queue
            """
        ).format(**f)

    def table_exists(self, suffix: str) -> Statement:
        """Whether ``<prefix><suffix>`` exists (e.g. tables of a later migration)."""
        return Statement(self._table_exists, {"name": self.names.prefix + suffix}, lambda rows: rows[0][0])

    def counts(self, finished_within: float | None = None) -> Statement:
        """``{queue: {state: count}}``: every live job, and the jobs finished in the last
        ``finished_within`` seconds (None: ever)."""
        return Statement(self._counts, {"window": finished_within}, lambda rows: _by_queue(rows)[0])

    def live_counts(self) -> Statement:
        """``({queue: {state: count}}, {queue: oldest due waiting job's age in seconds})``
        of the jobs not yet finished (what a live view polls)."""
        return Statement(self._live_counts, {}, _by_queue)

    def workers(self) -> Statement:
        return Statement(self._workers, {}, lambda rows: [_worker_row(*row) for row in rows])

    def table_health(self) -> Statement:
        """What decides whether the jobs table stays fast: its live and dead row versions
        (from the server's statistics, so free to read), seconds since it was last
        vacuumed, and the age of the oldest open transaction the server shows us — which
        holds back every vacuum, so dead rows pile up behind it. ``TableHealth``."""
        return Statement(_TABLE_HEALTH, {"jobs": self.names.prefix + "jobs"},
                         lambda rows: TableHealth(*rows[0]))

    def list_jobs(
        self, *, queues: Sequence[str] | None = None, states: Sequence[JobState] | None = None,
        task: str | None = None, limit: int = 50,
    ) -> Statement:
        """The newest jobs matching every filter given (``None`` matches all)."""
        params: dict[str, Any] = {
            "queues": list(queues) if queues else None,
            "states": [JobState(s).value for s in states] if states else None,
            "task": task,
            "limit": limit,
        }
        return Statement(self._list, params, lambda rows: [record_from_row(row) for row in rows])

    def running(self, *, queues: Sequence[str] | None = None, workers: Sequence[str] | None = None) -> Statement:
        """Running jobs (of these queues, held by these workers), by worker then start."""
        params = {"queues": list(queues) if queues else None, "workers": list(workers) if workers else None}
        return Statement(self._running, params, lambda rows: [record_from_row(row) for row in rows])

    def scheduled(self, *, queues: Sequence[str] | None = None, limit: int = 100) -> Statement:
        """Jobs waiting for a later time (countdown, eta, retry backoff), soonest first."""
        params = {"queues": list(queues) if queues else None, "limit": limit}
        return Statement(self._scheduled, params, lambda rows: [record_from_row(row) for row in rows])

    def states_of(self, ids: Sequence[Any]) -> Statement:
        """``{state: count}`` over the given job ids (how far a batch has got)."""
        return Statement(self._states_of, {"ids": list(ids)}, lambda rows: {s: n for s, n in rows})

    def batch_summary(self, ids: Sequence[Any]) -> Statement:
        """Per queue, task and state: jobs, how many needed more than one attempt, and
        the mean duration of the last attempt in milliseconds."""
        keys = ("queue", "task", "state", "jobs", "retried", "mean_ms")
        return Statement(self._batch_summary, {"ids": list(ids)}, lambda rows: [dict(zip(keys, r)) for r in rows])

    def purge(self, states: Sequence[JobState], queues: Sequence[str] | None = None) -> Statement:
        """Delete jobs in ``states`` (never running ones); ``{queue: deleted}``."""
        states = [JobState(s) for s in states]
        refused = [s.value for s in states if s not in PURGEABLE_STATES]
        if refused:
            raise ValueError(f"cannot purge {refused} jobs: a worker holds them (cancel them instead)")
        params = {"states": [s.value for s in states], "queues": list(queues) if queues else None}
        return Statement(self._purge, params, lambda rows: {q: n for q, n in rows})

    def bulk_count(self, action: BulkAction, selection: JobSelection, force: bool = False) -> Statement:
        """How many jobs ``action`` would change now (a dry run)."""
        return Statement(self._bulk_count, selection.params(action, force), lambda rows: rows[0][0])

    def bulk(self, action: BulkAction, selection: JobSelection, force: bool = False,
             batch: int = BULK_BATCH) -> Steps:
        """Apply ``action`` to every selected job, ``batch`` rows per statement (each its
        own transaction on an autocommit connection), in id order so that every job is
        visited once (a retried job that fails again meanwhile is not retried twice);
        returns how many changed. Rows locked by someone else are skipped."""
        params = {**selection.params(action, force), **self._channels, "batch": batch}
        after, total = uuid.UUID(int=0), 0
        while True:
            changed, scanned, last, _ = yield Statement(self._bulk[action], {**params, "after": after},
                                                        lambda rows: rows[0])
            total += changed
            if scanned < batch:
                return total
            after = last


def _by_queue(rows: list[tuple]) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """Rows of ``(queue, state, count, oldest waiting age)`` as counts per queue and
    state, and the oldest age per queue."""
    counts: dict[str, dict[str, int]] = {}
    oldest: dict[str, float] = {}
    for queue, state, count, waited in rows:
        counts.setdefault(queue, {})[state] = count
        if waited is not None:
            oldest[queue] = max(oldest.get(queue, 0.0), waited)
    return counts, oldest
