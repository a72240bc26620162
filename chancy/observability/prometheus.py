"""A worker's own metrics in Prometheus' format, on an HTTP port of its own
(``chancy worker --metrics-port N``; needs ``pip install "chancy[metrics]"``), so each
worker is scraped where it runs. Counted as the worker decides each outcome, for every
pool (a process-pool child's jobs are counted by its worker):

- ``chancy_worker_job_runs_total{queue, task, outcome}``: attempts finished; ``outcome``
  is the state the attempt moved its job to (succeeded, failed, retrying, cancelled);
- ``chancy_worker_job_failures_total{queue, task}``: attempts that failed (retried or not);
- ``chancy_worker_job_duration_seconds{queue, task}``: a histogram of run times;
- ``chancy_worker_job_queue_lag_seconds{queue, task}``: a histogram of due-to-started times;
- ``chancy_worker_jobs_in_flight{queue, task}``: jobs this worker is running, read from
  the jobs table at each scrape (an index lookup of this worker's running rows).

Counters start at zero with the worker. Cluster-wide gauges (queue depth, oldest waiting
job) are the dashboard's ``/metrics`` (see :mod:`chancy.dashboard.metrics`)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chancy.observability import attempts

if TYPE_CHECKING:
    from chancy.app import Chancy

log = logging.getLogger("chancy.observability")


class WorkerMetrics:
    """The metrics of the workers of ``app`` in this process, in a registry of their own
    (never the process-global one, which a Celery or Django app may fill)."""

    def __init__(self, app: "Chancy") -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs = Counter("chancy_worker_job_runs", "Attempts finished by this worker, by queue, task and outcome.",
                             ["queue", "task", "outcome"], registry=self.registry)
        self._failures = Counter("chancy_worker_job_failures", "Attempts that failed (retried or not).",
                                 ["queue", "task"], registry=self.registry)
        self._duration = Histogram("chancy_worker_job_duration_seconds", "Run time of each attempt.",
                                   ["queue", "task"], buckets=attempts.BUCKETS, registry=self.registry)
        self._lag = Histogram("chancy_worker_job_queue_lag_seconds", "Time from due to started of each attempt.",
                              ["queue", "task"], buckets=attempts.BUCKETS, registry=self.registry)
        self._in_flight = _InFlight(app)
        self.registry.register(self._in_flight)

    @property
    def worker_id(self) -> str | None:
        return self._in_flight.worker_id

    @worker_id.setter
    def worker_id(self, worker_id: str | None) -> None:
        """Whose running jobs are in flight (set once the worker has its id)."""
        self._in_flight.worker_id = worker_id

    def record(self, attempt: attempts.FinishedAttempt) -> None:
        self._runs.labels(attempt.queue, attempt.task, attempt.outcome).inc()
        if attempt.failed:
            self._failures.labels(attempt.queue, attempt.task).inc()
        if attempt.duration is not None:
            self._duration.labels(attempt.queue, attempt.task).observe(attempt.duration)
        if attempt.lag is not None:
            self._lag.labels(attempt.queue, attempt.task).observe(attempt.lag)


class _InFlight(Collector):
    def __init__(self, app: "Chancy") -> None:
        self.app = app
        self.worker_id: str | None = None

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("chancy_worker_jobs_in_flight", "Jobs this worker is running, by queue and task.",
                                 labels=["queue", "task"])

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        if self.worker_id is not None:
            try:
                rows = self.app.store.run_sync(self.app.store.admin.in_flight(self.worker_id))
            except Exception as exc:  # noqa: BLE001 - the counters are still worth serving
                log.warning("metrics: cannot read this worker's running jobs (%s)", type(exc).__name__)
                return []
            for queue, task, count in rows:
                family.add_metric([queue, task], count)
        return [family]


@contextlib.contextmanager
def serving(app: "Chancy", port: int, host: str = "0.0.0.0") -> Iterator[WorkerMetrics]:
    """Serve the metrics of ``app``'s workers on ``host:port`` (``/metrics``, any path)
    for the duration of the block; binding fails at once (OSError) if the port is taken."""
    metrics = WorkerMetrics(app)
    server, thread = start_http_server(port, host, registry=metrics.registry)
    stop_observing = attempts.observe(app, metrics.record)
    try:
        yield metrics
    finally:
        stop_observing()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
