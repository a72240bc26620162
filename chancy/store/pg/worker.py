"""Statements about workers: registration, heartbeat (on the database clock),
the start of prefetched jobs, and deregistration. The heartbeat also reports which of the worker's running jobs were
cancelled or taken away, so a missed notification cannot leave a job running."""

from __future__ import annotations

import uuid
from typing import Sequence

from psycopg import sql

from chancy.migrations import Names
from chancy.store.pg.statements import Statement


class WorkerSQL:
    def __init__(self, names: Names) -> None:
        f = names.fields()
        self._heartbeat = sql.SQL(
            """
            WITH beat AS (
                INSERT INTO {workers} (worker_id, hostname, pid, queues, tags, expires_at)
                VALUES (%(worker)s, %(hostname)s, %(pid)s, %(queues)s, %(tags)s,
                        now() + make_interval(secs => %(ttl)s))
                ON CONFLICT (worker_id) DO UPDATE
                SET last_seen = now(), expires_at = EXCLUDED.expires_at, queues = EXCLUDED.queues
                RETURNING worker_id
            )
            SELECT j.id FROM {jobs} j
            WHERE j.id = ANY(%(running)s)
              AND (j.state <> 'running' OR j.taken_by IS DISTINCT FROM (SELECT worker_id FROM beat))
            """
        ).format(**f)
        self._deregister = sql.SQL("DELETE FROM {workers} WHERE worker_id = %(worker)s").format(**f)
        # Rows another statement holds (the write-back of a job that finished meanwhile,
        # which writes its start itself) are skipped, never waited for: waiting deadlocked
        # with a concurrent write-back that locked the same rows in another order. A row
        # already started (e.g. by a rate-limit gate) counts as marked: were it left out,
        # the worker would ask again and again for a mark it can never get.
        self._mark_started = sql.SQL(
            """
            WITH marked AS (
                SELECT id FROM {jobs}
                WHERE id = ANY(%(ids)s) AND state = 'running' AND taken_by = %(worker)s
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {jobs} j SET started_at = coalesce(j.started_at, now())
            WHERE j.id = ANY(ARRAY(SELECT id FROM marked)) RETURNING j.id
            """
        ).format(**f)

    def heartbeat(
        self, worker_id: str, hostname: str, pid: int, queues: Sequence[str], tags: Sequence[str],
        running: Sequence[uuid.UUID], ttl: float,
    ) -> Statement:
        """Register or refresh the worker; it counts as dead ``ttl`` seconds (database
        clock) after this unless it heartbeats again."""
        params = {"worker": worker_id, "hostname": hostname, "pid": pid, "queues": list(queues),
                  "tags": list(tags), "running": list(running), "ttl": float(ttl)}
        return Statement(self._heartbeat, params, lambda rows: {row[0] for row in rows})

    def mark_started(self, worker_id: str, job_ids: Sequence[uuid.UUID]) -> Statement:
        """Prefetched jobs (claimed with ``started_at`` NULL) start now: from now on
        recovery counts their attempt. Returns the ids marked or started already (not
        those locked meanwhile)."""
        return Statement(self._mark_started, {"worker": worker_id, "ids": list(job_ids)},
                         lambda rows: {row[0] for row in rows})

    def deregister(self, worker_id: str) -> Statement:
        return Statement(self._deregister, {"worker": worker_id})
