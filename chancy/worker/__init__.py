"""The worker: one producer per queue (its claim loop, prefetch and executor), a
completer that writes outcomes back in batches, and services beside them (heartbeat,
runtime queue settings, leadership), fed by a LISTEN hub that wakes producers and cancels
jobs; a graceful shutdown (first SIGTERM/SIGINT drains, a second one stops hard)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any, Sequence

from chancy import rate_limits
from chancy.store.pg import migrations
from chancy.app import Chancy
from chancy.errors import ConfigurationError, SchemaOutOfDateError
from chancy.faults import backoff_until, is_unreachable
from chancy.plugin import Plugin, WorkerContext
from chancy.queue import QueuePlugin
from chancy.queues.pg import Queue as PgQueue
from chancy.store.memory import MemoryQueue
from chancy.store.of_app import cluster_for
from chancy.worker.completer import Completer
from chancy.worker.producer import ProducerContext, QueueProducer
from chancy.worker.services import Heartbeat, LeaderSeat, QueueSettings

log = logging.getLogger("chancy.worker")

#: Jobs a worker claims per slot of a queue, running ones included (Celery's
#: ``worker_prefetch_multiplier``): the next jobs are local when a slot frees.
DEFAULT_PREFETCH_MULTIPLIER = 4


class Worker:
    """Runs the app's queues (or the named subset) until stopped."""

    def __init__(
        self,
        app: Chancy,
        *,
        queues: Sequence[str] | None = None,
        worker_id: str | None = None,
        tags: Sequence[str] = (),
        shutdown_timeout: float = 30.0,
        heartbeat_interval: float = 5.0,
        liveness_timeout: float | None = None,
        settings_interval: float = 5.0,
        writeback_delay: float = 0.002,
        install_signal_handlers: bool = True,
        cluster_plugins: bool = True,
        startup_timeout: float = 60.0,
        prefetch_multiplier: int = DEFAULT_PREFETCH_MULTIPLIER,
    ) -> None:
        """``liveness_timeout`` (default 3 heartbeats): how long after its last heartbeat
        this worker counts as dead and its jobs are recovered. ``settings_interval``: how
        often runtime queue settings are re-read (a change also arrives by NOTIFY).
        ``cluster_plugins``: add :class:`~chancy.plugins.leadership.Leadership` and
        :class:`~chancy.plugins.recovery.Recovery` unless the app already has them.
        ``startup_timeout``: how long :meth:`start` waits for a database that is down or
        restarting before it gives up (0: not at all). ``prefetch_multiplier``: claim up
        to this many jobs per slot of a queue (Celery's ``worker_prefetch_multiplier``; 1:
        only as many as there are free slots); a prefetched job that has not started goes
        back to its queue, its attempt refunded, when the worker stops.

        Without ``queues`` the worker serves every queue of the app *and* every queue
        declared at runtime (:class:`~chancy.plugins.queues.QueueAdmin`), starting and
        stopping them as declarations come and go."""
        if queues is not None:
            unknown = [name for name in queues if name not in app.queues]
            if unknown:
                raise ConfigurationError(
                    f"Worker asked for undeclared queue(s) {unknown}; declared: {sorted(app.queues)}"
                )
        if not (queues or app.queues):
            raise ConfigurationError("The app declares no queues: add Queue('name') to its plugins")
        if (shutdown_timeout < 0 or heartbeat_interval <= 0 or writeback_delay < 0 or settings_interval <= 0
                or startup_timeout < 0):
            raise ConfigurationError("Need shutdown_timeout >= 0, heartbeat_interval > 0, settings_interval > 0, "
                                     "writeback_delay >= 0, startup_timeout >= 0")
        if not isinstance(prefetch_multiplier, int) or isinstance(prefetch_multiplier, bool) or prefetch_multiplier < 1:
            raise ConfigurationError(f"prefetch_multiplier must be an integer >= 1, got {prefetch_multiplier!r}")
        liveness_timeout = 3 * heartbeat_interval if liveness_timeout is None else liveness_timeout
        if liveness_timeout <= heartbeat_interval:
            raise ConfigurationError(
                f"liveness_timeout ({liveness_timeout:g}s) must exceed heartbeat_interval "
                f"({heartbeat_interval:g}s), or live workers would be declared dead")
        self.app = app
        self.queues = [app.queues[name] for name in (queues or app.queues)]
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tags = list(tags)
        self.shutdown_timeout = shutdown_timeout
        self.startup_timeout = startup_timeout
        self.heartbeat_interval = heartbeat_interval
        self.liveness_timeout = liveness_timeout
        self.settings_interval = settings_interval
        self.writeback_delay = writeback_delay
        self.prefetch_multiplier = prefetch_multiplier
        self.install_signal_handlers = install_signal_handlers
        self.uses_postgres = any(isinstance(q, PgQueue) for q in self.queues)
        self.serves_declared = queues is None and self.uses_postgres
        #: The cluster state of the store the worker's queues live in (Postgres's, or the
        #: app's in-memory store's when every queue it serves is in memory).
        self.cluster = cluster_for(app, self.queues)
        self.plugins = list(app.plugins)
        if cluster_plugins:
            for plugin in _missing_cluster_plugins(self.plugins):
                plugin.bind(app)
                self.plugins.append(plugin)
        #: The stop signals received, in order (the CLI's exit code tells SIGINT from SIGTERM).
        self.received_signals: list[signal.Signals] = []
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._unsubscribe: list[Any] = []
        #: The producer of each queue served, by name.
        self._producers: dict[str, QueueProducer] = {}
        owned: dict[uuid.UUID, int] = {}
        self._completer = Completer(app, self.worker_id, writeback_delay, owned, self._lost_track)
        self._producing = ProducerContext(app, self.worker_id, prefetch_multiplier,
                                          rate_limits.RateGate(rate_limits.limits_for(app)), self._stopping,
                                          self._completer, owned=owned)
        self._heartbeat = Heartbeat(self.cluster, self.worker_id, self.queues, self.tags, heartbeat_interval,
                                    liveness_timeout, self._running_in_store, self._cancel_running,
                                    self._producers.values)
        self._settings = QueueSettings(self.cluster, self._producers, self.serves_declared, settings_interval,
                                       self._serve_declared)
        self._leader_seat = LeaderSeat(self.plugins)
        #: What plugins see of this worker.
        self._plugin_context = WorkerContext(app, self.worker_id, self.cluster, lambda: self._leader_seat.is_leader,
                                             self.set_leader)

    # --- public control -------------------------------------------------------------------
    async def wait_until_ready(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    def request_stop(self, hard: bool = False) -> None:
        """Drain (finish running jobs, claim nothing new); ``hard`` stops running jobs too."""
        if hard or self._stopping.is_set():
            self._hard_stop.set()
        self._stopping.set()
        self._wake_all()

    async def stop(self, hard: bool = False) -> None:
        self.request_stop(hard)

    @property
    def stopped_hard(self) -> bool:
        """Whether running jobs were stopped rather than drained (a second signal)."""
        return self._hard_stop.is_set()

    @property
    def running_jobs(self) -> set[uuid.UUID]:
        return set(self._producing.held)

    @property
    def is_leader(self) -> bool:
        return self._leader_seat.is_leader

    def set_leader(self, is_leader: bool) -> None:
        """Called by the leadership plugin: start or stop the leader-only plugins."""
        self._leader_seat.set(is_leader, self._plugin_context)

    # --- main ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Run until :meth:`request_stop` or a signal; returns after a clean shutdown."""
        loop = asyncio.get_running_loop()
        if self.uses_postgres:
            listener = await self._reach_database()
            sql_ = self.app.store.jobs
            self._unsubscribe += [
                listener.subscribe(sql_.pushed_channel, self._on_pushed),
                listener.subscribe(sql_.cancel_channel, self._on_cancel),
                listener.on_reconnect(self._wake_all),
                listener.subscribe(sql_.queues_channel, lambda _name: self._settings.changed.set()),
                listener.on_reconnect(self._settings.changed.set),
            ]
        else:
            await self._heartbeat.beat()  # registered before its first claim, as recovery expects
        self._unsubscribe.append(self.cluster.watch_settings(self._settings.changed.set))
        for queue in self.queues:
            producer = await self._produce(queue)
            self._unsubscribe.append(queue.watch(producer.wake.set, self._cancel_running))
        await self._settings.load()
        signals = self._install_signals(loop)
        self._tasks = [self._claim_task(p) for p in self._producers.values()]
        self._tasks.append(loop.create_task(self._completer.run(), name="chancy-writeback"))
        self._tasks.append(loop.create_task(self._heartbeat.run(), name="chancy-heartbeat"))
        self._tasks.append(loop.create_task(self._settings.run(), name="chancy-settings"))
        self._tasks += [loop.create_task(plugin.run(self._plugin_context),
                                         name=f"chancy-plugin-{type(plugin).__name__}")
                        for plugin in self.plugins if not plugin.leader_only]
        log.info("worker %s started on queues %s", self.worker_id, [q.name for q in self.queues])
        gate = self._producing.rate_gate
        if gate.limits:
            log.info("task rate limits (cluster-wide): %s", rate_limits.describe(gate.limits))
            for queue in self.queues:
                if not queue.enforces_rate_limits:
                    log.warning("queue %r (%s) cannot count task starts: task rate limits are not enforced "
                                "on it", queue.name, type(queue).__name__)
        self._ready.set()
        try:
            await self._stopping.wait()
            await self._shutdown()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _reach_database(self) -> Any:
        """Check the schema, register and start listening, waiting out a database that is
        restarting or down for up to ``startup_timeout`` seconds, as a running worker
        waits out an outage; a refusal (bad password, no such database) fails at once."""
        delays = backoff_until(self.startup_timeout)
        while True:
            try:
                await self._check_schema()
                await self._heartbeat.beat()
                return await self.app.listener()
            except Exception as exc:
                delay = next(delays, None)
                if delay is None or not is_unreachable(exc) or self._stopping.is_set():
                    raise
                log.warning("database unreachable at start (%s); retrying in %.1fs", exc, delay)
            await self._producing.sleep(delay)

    async def _check_schema(self) -> None:
        version = await self.app.schema_version()
        if version < migrations.LATEST_VERSION:
            raise SchemaOutOfDateError(
                f"The database schema is at version {version} but this code needs "
                f"{migrations.LATEST_VERSION}. Run `chancy migrate` (or `await chancy.migrate()`) first."
            )

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if not self.install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        self.received_signals.append(signal.Signals(sig))
        hard = self._stopping.is_set()
        log.warning("received %s: %s", signal.Signals(sig).name,
                    "stopping running jobs now" if hard else
                    f"draining (up to {self.shutdown_timeout:g}s; send again to stop hard)")
        self.request_stop(hard=hard)

    # --- producers ------------------------------------------------------------------------------
    async def _produce(self, queue: QueuePlugin, declared: bool = False) -> QueueProducer:
        """Start the queue's executor and its producer (its claim loop starts later)."""
        executor = queue.make_executor()
        executor.on_start = self._completer.on_start
        await executor.start()
        producer = QueueProducer(queue, executor, self._producing, declared=declared)
        self._producers[queue.name] = producer
        return producer

    def _claim_task(self, producer: QueueProducer) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self._claim_loop(producer),
                                                      name=f"chancy-claim-{producer.queue.name}")

    async def _claim_loop(self, producer: QueueProducer) -> None:
        await producer.run()
        if producer.retired and not self._stopping.is_set():
            await self._retire(producer)

    async def _serve_declared(self, name: str) -> QueueProducer:
        queue = PgQueue(name, concurrency=1, executor="asyncio")
        queue.bind(self.app)
        producer = await self._produce(queue, declared=True)
        self.queues.append(queue)
        if self._ready.is_set():  # else start() is about to start every producer's claim loop
            self._tasks.append(self._claim_task(producer))
        log.info("serving queue %r (declared at runtime)", name)
        return producer

    async def _retire(self, producer: QueueProducer) -> None:
        """A deleted declaration: let its running jobs finish, then forget the queue."""
        log.info("queue %r was deleted; draining it", producer.queue.name)
        await producer.executor.stop(self.shutdown_timeout)
        self._producers.pop(producer.queue.name, None)
        self.queues.remove(producer.queue)

    def _lost_track(self, queue: QueuePlugin) -> None:
        """A job of ``queue`` has an outcome that cannot be written: its row goes back to
        the queue with the producer's next reconciliation."""
        producer = self._producers.get(queue.name)
        if producer is not None:
            producer.reconcile = True

    def _running_in_store(self) -> list[uuid.UUID]:
        """The running jobs of the queues in the store the worker heartbeats into."""
        in_memory = not self.uses_postgres
        return [job_id for job_id, p in self._producing.held.items()
                if isinstance(p.queue, MemoryQueue) == in_memory]

    def _on_pushed(self, queue_name: str) -> None:
        producer = self._producers.get(queue_name)
        if producer is not None:
            producer.wake.set()

    def _wake_all(self) -> None:
        for producer in self._producers.values():
            producer.wake.set()

    def _on_cancel(self, job_id: str) -> None:
        self._cancel_running(uuid.UUID(job_id))

    def _cancel_running(self, job_id: uuid.UUID) -> None:
        producer = self._producing.held.get(job_id)
        if producer is not None:
            producer.cancel(job_id)

    # --- shutdown -------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        started = time.monotonic()
        self._wake_all()
        claimers = [t for t in self._tasks if t.get_name().startswith("chancy-claim-")]
        await asyncio.gather(*claimers, return_exceptions=True)
        timeout = 0.0 if self._hard_stop.is_set() else self.shutdown_timeout
        producers = list(self._producers.values())
        drains = [asyncio.ensure_future(p.executor.stop(timeout)) for p in producers]
        hard = asyncio.ensure_future(self._hard_stop.wait())
        await asyncio.wait([*drains, hard], return_when=asyncio.FIRST_COMPLETED)
        if hard.done() and not all(d.done() for d in drains):
            await asyncio.gather(*(p.executor.stop(0) for p in producers), return_exceptions=True)
        await asyncio.gather(*drains, return_exceptions=True)
        hard.cancel()
        await self._completer.final_flush(max(10.0, self.shutdown_timeout))
        leader_tasks = self._leader_seat.tasks
        for task in self._tasks + leader_tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *leader_tasks, return_exceptions=True)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self._heartbeat.deregister()
        log.info("worker %s stopped after %.1fs of shutdown", self.worker_id, time.monotonic() - started)


def _missing_cluster_plugins(plugins: Sequence[Plugin]) -> list[Plugin]:
    """Leadership and recovery, unless configured: without them a crashed worker's jobs
    would stay ``running`` forever."""
    from chancy.plugins.leadership import Leadership
    from chancy.plugins.recovery import Recovery

    return [cls() for cls in (Leadership, Recovery) if not any(isinstance(p, cls) for p in plugins)]
