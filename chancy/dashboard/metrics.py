"""Prometheus metrics of the whole cluster, rendered by ``prometheus-client`` in the text
exposition format (version 0.0.4), from a registry of this dashboard's own (never the
process-global one).

Gauges (live jobs, oldest waiting job, workers, paused queues, the jobs table's live and dead
rows, the oldest open transaction) are read fresh on each
scrape. Counters and histograms of finished jobs must never go down, yet rows are pruned,
so they are accumulated in this process: each scrape adds the jobs that finished since the
previous one, up to ``lag`` seconds ago (a write-back's ``completed_at`` is its
transaction's start, so a window that closes a little in the past catches every commit).
They start at zero when the dashboard starts, which Prometheus' ``rate()`` expects.
A worker's own metrics (per task, in flight) are ``chancy worker --metrics-port``'s
(:mod:`chancy.observability.prometheus`)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from chancy.store.admin import TableHealth
from chancy.job import LIVE_STATES
from chancy.observability.attempts import BUCKETS
from chancy.store.pg.admin import in_sequence

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.dashboard.console import Console

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LAG_SECONDS = 5.0


def _le(bound: float) -> str:
    """A bucket bound as the ``le`` label has always read (``0.005``, ``1``, ``1800``)."""
    return f"{bound:g}"


class _Histogram:
    """Cumulative bucket counts, count and sum of one queue's finished jobs."""

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def add_to(self, family: HistogramMetricFamily, queue: str) -> None:
        buckets = [(_le(le), n) for le, n in zip(BUCKETS, self.buckets, strict=True)] + [("+Inf", self.count)]
        family.add_metric([queue], buckets=buckets, sum_value=self.sum)


class _Scrape(Collector):
    """The families of one scrape, gathered by :meth:`Metrics.render` beforehand (a
    collector's ``collect`` is synchronous; the reads are async)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return self.families


def _health_families(health: TableHealth) -> list[Metric]:
    """Gauges to alert on before the jobs table slows down: dead rows piling up, and an
    old open transaction (which keeps vacuum from removing them)."""
    return [
        GaugeMetricFamily("chancy_jobs_table_live_rows", "Live row versions of the jobs table (statistics).",
                          value=health.live_rows),
        GaugeMetricFamily("chancy_jobs_table_dead_rows",
                          "Dead row versions of the jobs table awaiting vacuum (statistics).", value=health.dead_rows),
        GaugeMetricFamily("chancy_oldest_transaction_seconds",
                          "Age of the oldest open transaction holding a snapshot (0 when none); it holds back vacuum.",
                          value=health.oldest_transaction_seconds or 0),
    ]


class Metrics:
    """The ``/metrics`` endpoint's state for one app."""

    def __init__(self, app: "Chancy", console: "Console", lag: float = LAG_SECONDS) -> None:
        self.console = console
        self.store = app.store
        self.lag = lag
        self._mark: datetime | None = None
        self._finished: dict[tuple[str, str], int] = {}
        self._run: dict[str, _Histogram] = {}
        self._wait: dict[str, _Histogram] = {}
        self._lock = asyncio.Lock()
        self._scrape = _Scrape()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._scrape)

    async def _accumulate(self) -> None:
        """Add the jobs finished since the last scrape to the counters and histograms."""
        statements = self.store.dashboard
        async with self._lock:
            end = await self.store.run(statements.metric_window_end(self.lag))
            start, self._mark = self._mark, end
            if start is None or end <= start:
                return
            totals, buckets = await self.store.run(in_sequence(
                statements.metric_totals(start, end), statements.metric_buckets(start, end, BUCKETS)))
            for queue, state, count, run_sum, wait_sum, timed in totals:
                self._finished[(queue, state)] = self._finished.get((queue, state), 0) + count
                for histograms, total in ((self._run, run_sum), (self._wait, wait_sum)):
                    histogram = histograms.setdefault(queue, _Histogram())
                    histogram.count += timed
                    histogram.sum += total
            for queue, le, run_n, wait_n in buckets:
                index = BUCKETS.index(le)
                self._run[queue].buckets[index] += run_n
                self._wait[queue].buckets[index] += wait_n

    async def render(self) -> str:
        await self._accumulate()
        queues = await self.console.queues()
        workers, health = await self.store.run(in_sequence(
            self.store.dashboard.workers_alive(), self.store.admin.table_health()))
        self._scrape.families = self._families(queues, workers) + _health_families(health)
        return generate_latest(self._registry).decode()

    def _families(self, queues: list[dict[str, Any]], workers: int) -> list[Metric]:
        jobs = GaugeMetricFamily("chancy_jobs", "Jobs not yet finished, by queue and state.", labels=["queue", "state"])
        oldest = GaugeMetricFamily("chancy_queue_oldest_waiting_seconds",
                                   "Age of the queue's longest-waiting runnable job (0 when none waits).",
                                   labels=["queue"])
        paused = GaugeMetricFamily("chancy_queue_paused", "1 while the queue is paused.", labels=["queue"])
        for q in queues:
            for state in sorted(LIVE_STATES, key=lambda s: s.value):
                jobs.add_metric([q["name"], state.value], q[state.value])
            oldest.add_metric([q["name"]], q["oldest_waiting_seconds"] or 0)
            paused.add_metric([q["name"]], int(q["paused"]))
        alive = GaugeMetricFamily("chancy_workers", "Workers whose heartbeat has not expired.", value=workers)
        finished = CounterMetricFamily(
            "chancy_jobs_finished_total",
            "Jobs finished (succeeded, failed, cancelled, expired) since this dashboard started.",
            labels=["queue", "state"])
        for (queue, ended), n in sorted(self._finished.items()):
            finished.add_metric([queue, ended], n)
        run = HistogramMetricFamily("chancy_job_run_seconds", "Run time of the last attempt of finished jobs.",
                                    labels=["queue"])
        wait = HistogramMetricFamily("chancy_job_wait_seconds",
                                     "Time from due to started (pickup latency) of the last attempt of finished jobs.",
                                     labels=["queue"])
        for family, histograms in ((run, self._run), (wait, self._wait)):
            for queue, histogram in sorted(histograms.items()):
                histogram.add_to(family, queue)
        return [jobs, oldest, paused, alive, finished, run, wait]
