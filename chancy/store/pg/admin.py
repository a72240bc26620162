"""Operators' statements (the ``chancy`` CLI, the dashboard, the test helpers): counts per
queue and state, workers and their heartbeat age, job listings, purging waiting jobs, and
retrying, cancelling or deleting every job a selection covers, in bounded batches. The
statements are in ``sql/admin.sql``; here, their parameters and what their rows become.
Each operation is :data:`~chancy.store.pg.statements.Steps`, run by the store
(``app.store.run(app.store.admin.counts())``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Sequence

from chancy.job import JobRecord, JobState
from chancy.migrations import Names
from chancy.store.admin import PURGEABLE_STATES, BULK_BATCH, BulkAction, JobSelection, TableHealth, WorkerRow
from chancy.store.pg.jobs import DONE_IDS_PER_NOTIFICATION, record_from_row
from chancy.store.pg.statements import SqlFile, Statement, Steps, single


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` matched literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def selection_params(selection: JobSelection, states: Sequence[str] | None) -> dict[str, Any]:
    """The parameters of the selection block every filtering statement shares (see the
    header of ``sql/admin.sql``); ``states`` None: any state."""
    return {
        "states": list(states) if states else None, "queues": list(selection.queues) or None,
        "task": selection.task,
        "task_like": like_pattern(selection.task_contains) if selection.task_contains else None,
        "text": like_pattern(selection.text) if selection.text else None,
        "since": selection.since, "until": selection.until, "ids": list(selection.ids) or None,
    }


def in_sequence(*operations: Steps) -> Steps:
    """Several operations one after the other on one connection; their results, in order."""
    results = []
    for operation in operations:
        results.append((yield from operation))
    return results


class AdminStatements:
    """The operator statements for one table prefix (``PgStore.admin``)."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._sql = SqlFile("admin.sql", names.fields())
        self._channels = {"pushed_channel": names.channel("pushed"), "cancel_channel": names.channel("cancel"),
                          "done_channel": names.channel("done")}

    def _one(self, name: str, params: dict[str, Any], mapper: Any = lambda rows: rows) -> Steps:
        return single(Statement(self._sql[name], params, mapper))

    def with_statement_timeout(self, milliseconds: int, operation: Steps) -> Steps:
        """``operation`` on a session whose statements each get at most ``milliseconds``
        (a CLI command's ``--timeout``): for a dedicated session (``run_in_session_sync``),
        since the setting stays with the session."""
        yield Statement(self._sql["statement_timeout"], {"timeout": f"{milliseconds}ms"})
        return (yield from operation)

    def counts(self, finished_within: float | None = None) -> Steps:
        """``{queue: {state: count}}``: every live job, and the jobs finished in the last
        ``finished_within`` seconds (None: ever)."""
        return self._one("counts", {"window": finished_within}, lambda rows: _by_queue(rows)[0])

    def live_counts(self) -> Steps:
        """``({queue: {state: count}}, {queue: oldest due waiting job's age in seconds})``
        of the jobs not yet finished (what a live view polls)."""
        return self._one("live_counts", {}, _by_queue)

    def workers(self) -> Steps:
        """Every registered worker (:class:`~chancy.store.admin.WorkerRow`)."""
        return self._one("workers", {}, lambda rows: [_worker_row(*row) for row in rows])

    def table_health(self) -> Steps:
        """What decides whether the jobs table stays fast: its live and dead row versions
        (from the server's statistics, so free to read), seconds since it was last
        vacuumed, and the age of the oldest open transaction the server shows us — which
        holds back every vacuum, so dead rows pile up behind it. ``TableHealth``."""
        return self._one("table_health", {"jobs": self.names.prefix + "jobs"}, lambda rows: TableHealth(*rows[0]))

    def row_estimate(self, table: str) -> Steps:
        """The planner's estimate of ``table``'s rows (-1 before its first ANALYZE or if
        there is no such table): a count that reads nothing."""
        return self._one("row_estimate", {"table": table}, lambda rows: rows[0][0] if rows else -1)

    def list_jobs(self, selection: JobSelection, limit: int = 50) -> Steps:
        """The newest selected jobs, ``limit`` at most."""
        params = {**selection_params(selection, [JobState(s).value for s in selection.states]), "limit": limit}
        return self._one("list_jobs", params, _records)

    def running(self, *, queues: Sequence[str] | None = None, workers: Sequence[str] | None = None) -> Steps:
        """Running jobs (of these queues, held by these workers), by worker then start."""
        params = {"queues": list(queues) if queues else None, "workers": list(workers) if workers else None}
        return self._one("running", params, _records)

    def scheduled(self, *, queues: Sequence[str] | None = None, limit: int = 100) -> Steps:
        """Jobs waiting for a later time (countdown, eta, retry backoff), soonest first."""
        return self._one("scheduled", {"queues": list(queues) if queues else None, "limit": limit}, _records)

    def states_of(self, ids: Sequence[Any]) -> Steps:
        """``{state: count}`` over the given job ids (how far a batch has got)."""
        return self._one("states_of", {"ids": list(ids)}, lambda rows: {s: n for s, n in rows})

    def batch_summary(self, ids: Sequence[Any]) -> Steps:
        """Per queue, task and state: jobs, how many needed more than one attempt, and
        the mean duration of the last attempt in milliseconds."""
        keys = ("queue", "task", "state", "jobs", "retried", "mean_ms")
        return self._one("batch_summary", {"ids": list(ids)},
                         lambda rows: [dict(zip(keys, r, strict=True)) for r in rows])

    def in_flight(self, worker_id: str) -> Steps:
        """``[(queue, task, running jobs)]`` that worker has started and not finished."""
        return self._one("in_flight", {"worker": worker_id})

    def peek_statements(self) -> list[str]:
        """Statements for people to paste into psql to look at the jobs (one line each,
        the table name unquoted as they would type it)."""
        fields = {name: self.names.prefix + name for name in self.names.fields()}
        return [" ".join(line.strip() for line in self._sql.template(name).splitlines()
                         if not line.lstrip().startswith("--")).format(**fields)
                for name in ("peek_counts", "peek_failed")]

    def purge(self, states: Sequence[JobState], queues: Sequence[str] | None = None) -> Steps:
        """Delete jobs in ``states`` (never running ones); ``{queue: deleted}``."""
        chosen = [JobState(s) for s in states]
        refused = [s.value for s in chosen if s not in PURGEABLE_STATES]
        if refused:
            raise ValueError(f"cannot purge {refused} jobs: a worker holds them (cancel them instead)")
        params = {"states": [s.value for s in chosen], "queues": list(queues) if queues else None}
        return self._one("purge", params, lambda rows: {q: n for q, n in rows})

    def bulk_count(self, action: BulkAction, selection: JobSelection, force: bool = False) -> Steps:
        """How many jobs ``action`` would change now (a dry run)."""
        return self._one("bulk_count", selection_params(selection, selection.states_for(action, force)),
                         lambda rows: rows[0][0])

    def bulk(self, action: BulkAction, selection: JobSelection, force: bool = False,
             batch: int = BULK_BATCH) -> Steps:
        """Apply ``action`` to every selected job, ``batch`` rows per statement (each its
        own transaction on an autocommit connection), in id order so that every job is
        visited once (a retried job that fails again meanwhile is not retried twice);
        returns how many changed. Rows locked by someone else are skipped."""
        query = self._sql[f"bulk_{action.value}"]
        params = {**selection_params(selection, selection.states_for(action, force)), **self._channels,
                  "batch": batch, "ids_per_notification": DONE_IDS_PER_NOTIFICATION}
        after, total = uuid.UUID(int=0), 0
        while True:
            changed, scanned, last, _ = yield Statement(query, {**params, "after": after}, lambda rows: rows[0])
            total += changed
            if scanned < batch:
                return total
            after = last


def _records(rows: list[tuple]) -> list[JobRecord]:
    return [record_from_row(row) for row in rows]


def _worker_row(worker_id: str, hostname: str, pid: int, queues: list[str], tags: list[str],
                started_at: datetime, heartbeat_age: float, alive: bool, running_jobs: list[str],
                uptime: float) -> WorkerRow:
    return WorkerRow(worker_id=worker_id, hostname=hostname, pid=pid, queues=queues, tags=tags,
                     started_at=started_at, heartbeat_age=heartbeat_age, alive=alive,
                     running=len(running_jobs), running_jobs=running_jobs, uptime=uptime)


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
