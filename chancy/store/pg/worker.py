"""The worker's own statements (``sql/worker.sql``): registration and heartbeat, the
start of prefetched jobs, deregistration, and the backoff of recovered jobs. The
heartbeat also reports which of the worker's running jobs were cancelled or taken away,
so a missed notification cannot leave a job running."""

from __future__ import annotations

import uuid
from typing import Mapping, Sequence

from chancy.migrations import Names
from chancy.store.pg.statements import SqlFile, Statement


def _ids(rows: list[tuple]) -> set[uuid.UUID]:
    return {row[0] for row in rows}


class WorkerSQL:
    def __init__(self, names: Names) -> None:
        self._sql = SqlFile("worker.sql", names.fields())

    def heartbeat(
        self, worker_id: str, hostname: str, pid: int, queues: Sequence[str], tags: Sequence[str],
        running: Sequence[uuid.UUID], ttl: float,
    ) -> Statement:
        """Register or refresh the worker; it counts as dead ``ttl`` seconds (database
        clock) after this unless it heartbeats again. Answers the ids of ``running`` that
        are no longer its to run."""
        params = {"worker": worker_id, "hostname": hostname, "pid": pid, "queues": list(queues),
                  "tags": list(tags), "running": list(running), "ttl": float(ttl)}
        return Statement(self._sql["heartbeat"], params, _ids)

    def mark_started(self, worker_id: str, job_ids: Sequence[uuid.UUID]) -> Statement:
        """Prefetched jobs (claimed with ``started_at`` NULL) start now: from now on
        recovery counts their attempt. Returns the ids marked or started already (not
        those locked meanwhile)."""
        return Statement(self._sql["mark_started"], {"worker": worker_id, "ids": list(job_ids)}, _ids)

    def deregister(self, worker_id: str) -> Statement:
        return Statement(self._sql["deregister"], {"worker": worker_id})

    def delay_retries(self, delays: Mapping[uuid.UUID, float]) -> Statement:
        """Recovered jobs that will be retried wait ``delays[id]`` seconds first."""
        params = {"ids": list(delays), "delays": [float(d) for d in delays.values()]}
        return Statement(self._sql["delay_retries"], params)

