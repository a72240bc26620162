"""Finished jobs per minute, queue and state over the last hour, kept up to date cheaply.

Counting an hour of finished jobs on every page refresh would read every one of them
(a million rows at ~300 jobs/s). A minute that closed more than ``lag`` seconds ago no
longer changes (a write-back's ``completed_at`` is its transaction's start, and those
transactions are short), so its counts are kept, and each refresh reads only the jobs
finished since the last kept minute."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from chancy.store.pg.statements import Steps

Counts = dict[tuple[str, str], int]  # (queue, state) -> jobs


class FinishedHistory:
    def __init__(self, span: float = 3600.0, bucket: float = 60.0, lag: float = 5.0) -> None:
        self.span = span
        self.bucket = bucket
        self.lag = lag
        self._closed: dict[float, Counts] = {}  # bucket start -> counts, for minutes that no longer change
        self._closed_until: float | None = None  # epoch: every bucket before it is in _closed
        self._lock = asyncio.Lock()

    async def read(self, now: datetime, run: Callable[[Steps], Awaitable[Any]],
                   finished_buckets: Callable[[datetime, float], Steps]) -> dict[float, Counts]:
        """Counts per bucket start over ``span`` ending at ``now`` (the database clock):
        ``run`` runs the store's ``finished_buckets`` operation."""
        async with self._lock:
            first = (now.timestamp() - self.span) // self.bucket * self.bucket + self.bucket
            start = first if self._closed_until is None else max(first, self._closed_until)
            fresh: dict[float, Counts] = {}
            rows = await run(finished_buckets(datetime.fromtimestamp(start, timezone.utc), self.bucket))
            for at, queue, state, count in rows:
                fresh.setdefault(at, {})[(queue, state)] = count
            settled = (now - timedelta(seconds=self.lag)).timestamp() // self.bucket * self.bucket
            at = start
            while at < settled:
                self._closed[at] = fresh.pop(at, {})
                at += self.bucket
            self._closed_until = max(start, settled)
            for at in [at for at in self._closed if at < first]:
                del self._closed[at]
            return {**self._closed, **fresh}
