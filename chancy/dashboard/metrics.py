"""Prometheus metrics in the text exposition format (version 0.0.4), written here: the
format is small, and this keeps the dashboard free of a global metrics registry.

Gauges (live jobs, oldest waiting job, workers, paused queues) are read fresh on each
scrape. Counters and histograms of finished jobs must never go down, yet rows are pruned,
so they are accumulated in this process: each scrape adds the jobs that finished since the
previous one, up to ``lag`` seconds ago (a write-back's ``completed_at`` is its
transaction's start, so a window that closes a little in the past catches every commit).
They start at zero when the dashboard starts, which Prometheus' ``rate()`` expects."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import TYPE_CHECKING, Iterable

from chancy.dashboard.queries import DashboardSQL
from chancy.job import LIVE_STATES
from chancy.queues.sql import drive_async, single

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.dashboard.console import Console

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
LAG_SECONDS = 5.0


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Exposition:
    """Collects metric families and renders them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def samples(self, labels: dict[str, str]) -> list[tuple[str, dict[str, str], float]]:
        out = [("_bucket", {**labels, "le": _number(le)}, n) for le, n in zip(BUCKETS, self.buckets)]
        out.append(("_bucket", {**labels, "le": "+Inf"}, self.count))
        out.append(("_sum", labels, self.sum))
        out.append(("_count", labels, self.count))
        return out


class Metrics:
    """The ``/metrics`` endpoint's state for one app."""

    def __init__(self, app: "Chancy", console: "Console", lag: float = LAG_SECONDS) -> None:
        self.app = app
        self.console = console
        self.sql: DashboardSQL = console.sql
        self.lag = lag
        self._mark: datetime | None = None
        self._finished: dict[tuple[str, str], int] = {}
        self._run: dict[str, _Histogram] = {}
        self._wait: dict[str, _Histogram] = {}
        self._lock = asyncio.Lock()

    async def _accumulate(self) -> None:
        """Add the jobs finished since the last scrape to the counters and histograms."""
        async with self._lock, self.app.connection() as conn:
            end = await drive_async(conn, single(self.sql.metric_window_end(self.lag)))
            start, self._mark = self._mark, end
            if start is None or end <= start:
                return
            for queue, state, count, run_sum, wait_sum, timed in await drive_async(
                    conn, single(self.sql.metric_totals(start, end))):
                self._finished[(queue, state)] = self._finished.get((queue, state), 0) + count
                for histograms, total in ((self._run, run_sum), (self._wait, wait_sum)):
                    histogram = histograms.setdefault(queue, _Histogram())
                    histogram.count += timed
                    histogram.sum += total
            for queue, le, run_n, wait_n in await drive_async(
                    conn, single(self.sql.metric_buckets(start, end, BUCKETS))):
                index = BUCKETS.index(le)
                self._run[queue].buckets[index] += run_n
                self._wait[queue].buckets[index] += wait_n

    async def render(self) -> str:
        await self._accumulate()
        queues = await self.console.queues()
        async with self.app.connection() as conn:
            workers = await drive_async(conn, single(self.sql.workers_alive()))
        out = Exposition()
        out.family("chancy_jobs", "gauge", "Jobs not yet finished, by queue and state.", (
            ("", {"queue": q["name"], "state": state.value}, q[state.value])
            for q in queues for state in sorted(LIVE_STATES, key=lambda s: s.value)))
        out.family("chancy_queue_oldest_waiting_seconds", "gauge",
                   "Age of the queue's longest-waiting runnable job (0 when none waits).",
                   (("", {"queue": q["name"]}, q["oldest_waiting_seconds"] or 0) for q in queues))
        out.family("chancy_queue_paused", "gauge", "1 while the queue is paused.",
                   (("", {"queue": q["name"]}, int(q["paused"])) for q in queues))
        out.family("chancy_workers", "gauge", "Workers whose heartbeat has not expired.", [("", {}, workers)])
        out.family("chancy_jobs_finished_total", "counter",
                   "Jobs finished (succeeded, failed, cancelled, expired) since this dashboard started.",
                   (("", {"queue": q, "state": s}, n) for (q, s), n in sorted(self._finished.items())))
        out.family("chancy_job_run_seconds", "histogram", "Run time of the last attempt of finished jobs.",
                   (sample for q, h in sorted(self._run.items()) for sample in h.samples({"queue": q})))
        out.family("chancy_job_wait_seconds", "histogram",
                   "Time from due to started (pickup latency) of the last attempt of finished jobs.",
                   (sample for q, h in sorted(self._wait.items()) for sample in h.samples({"queue": q})))
        return out.render()
