"""The worker: one claim loop per queue feeding that queue's executor, a LISTEN hub that
wakes loops and cancels jobs, a heartbeat, batched write-back of outcomes, and a
graceful shutdown (first SIGTERM/SIGINT drains, a second one stops hard)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from chancy import migrations, rate_limits, serialization
from chancy.app import Chancy
from chancy.errors import ConfigurationError, SchemaOutOfDateError
from chancy.errors import JobCancelledError
from chancy.execution import Outcome
from chancy.executors.base import Executor
from chancy.faults import backoff_until, is_connection_error, is_unreachable
from chancy.job import Backoff, JobRecord, JobState, UndecodableRecord
from chancy.plugin import Plugin
from chancy.plugins.sql import ClusterSQL
from chancy.queue import QueuePlugin, Transition
from chancy.queues.pg import Queue as PgQueue
from chancy.store.pg.statements import drive_async, single, Steps
from chancy.worker_sql import WorkerSQL

log = logging.getLogger("chancy.worker")

DEFAULT_BACKOFF = Backoff()
#: Jobs a worker claims per slot of a queue, running ones included (Celery's
#: ``worker_prefetch_multiplier``): the next jobs are local when a slot frees.
DEFAULT_PREFETCH_MULTIPLIER = 4
#: Tries of an outcome whose follow-up the database refuses, before the job fails instead.
FOLLOW_UP_TRIES = 5

#: Hooks that add follow-up statements to a job's transition, run in the transaction that
#: writes it (e.g. the Celery layer's chain and chord steps). Each is
#: ``hook(app, record, transition) -> (() -> Steps) | None``.
CompletionHook = Callable[[Chancy, JobRecord, Transition], "Callable[[], Steps] | None"]
completion_hooks: list[CompletionHook] = []


def with_follow_ups(app: Chancy, record: JobRecord, transition: Transition) -> Transition:
    """``transition`` with the follow-ups the registered hooks ask for, in hook order."""
    follow_ups = []
    for hook in completion_hooks:
        try:
            make_steps = hook(app, record, transition)
        except Exception:  # noqa: BLE001 - a broken hook must not lose the job's outcome
            log.exception("completion hook %r failed for job %s; its follow-up is skipped", hook, record.id)
            continue
        if make_steps is not None:
            follow_ups.append(make_steps)
    if not follow_ups:
        return transition

    def follow_up() -> Steps:
        for make_steps in follow_ups:
            yield from make_steps()

    return dataclasses.replace(transition, follow_up=follow_up)


def decide(record: JobRecord, outcome: Outcome) -> Transition:
    """What one attempt's outcome does to its job row."""
    if outcome.succeeded:
        return Transition(record.id, JobState.SUCCEEDED, result_json=outcome.result_json,
                          attempt=record.attempts)
    if outcome.cancelled:
        return Transition(record.id, JobState.CANCELLED, error=outcome.error, attempt=record.attempts)
    max_attempts = outcome.max_attempts or record.max_attempts
    retry_requested = outcome.retry_in is not None
    if record.attempts < max_attempts and (retry_requested or not outcome.final):
        if retry_requested and outcome.retry_in is not None and outcome.retry_in >= 0:
            delay = outcome.retry_in
        else:
            delay = (record.backoff or DEFAULT_BACKOFF).delay(record.attempts)
        return Transition(record.id, JobState.RETRYING, error=outcome.error, delay=delay,
                          max_attempts=outcome.max_attempts, attempt=record.attempts)
    return Transition(record.id, JobState.FAILED, error=outcome.error, max_attempts=outcome.max_attempts,
                      attempt=record.attempts)


@dataclasses.dataclass
class _QueueRunner:
    queue: QueuePlugin
    executor: Executor
    wake: asyncio.Event
    saturated: bool = False  # the last claim filled every free slot: more may be waiting
    #: Runtime settings (chancy.plugins.queues), re-read while running.
    paused_until: datetime | None = None
    concurrency_cap: int | None = None
    declared: bool = False  # served because it was declared at runtime, not in code
    retired: bool = False  # its declaration was deleted: claim no more, drain, drop
    #: Before its next claim, hand back rows the database says this worker holds on the
    #: queue but the worker does not know of (a claim whose answer was lost).
    reconcile: bool = True
    reconciled_once: bool = False  # the first look finds an earlier process's rows
    #: Claimed jobs not handed to the executor yet (prefetched), oldest first.
    prefetched: collections.deque[JobRecord] = dataclasses.field(default_factory=collections.deque)
    #: The prefetched jobs whose start is written (by their claim or a mark): only these
    #: are handed to the executor, so that a job that crashes its worker uses an attempt.
    marked: set[uuid.UUID] = dataclasses.field(default_factory=set)
    #: The mark being written, if any: a hand-back waits for it, or the rows it holds
    #: would be skipped and left ``running`` (and it would mark rows handed back).
    marking: asyncio.Task[None] | None = None
    feed_scheduled: bool = False

    @property
    def free_slots(self) -> int:
        free = self.executor.free_slots
        if self.concurrency_cap is not None:
            occupied = self.executor.capacity - free
            free = min(free, self.concurrency_cap * self.executor.depth - occupied)
        return free

    @property
    def concurrency(self) -> int:
        """Jobs at a time, under the runtime cap if any."""
        if self.concurrency_cap is not None:
            return min(self.executor.concurrency, self.concurrency_cap)
        return self.executor.concurrency

    def claim_room(self, multiplier: int) -> int:
        """How many jobs to claim now: up to ``multiplier`` per slot held in all (running,
        queued in the executor and prefetched), once half of that has run down or a slot
        would idle, so that a claim takes a batch rather than one job per finished one.
        A queue that cannot hand unstarted jobs back
        (:meth:`~chancy.queue.QueuePlugin.release_unknown`) claims only for free slots."""
        free = self.free_slots - len(self.prefetched)
        if not self.can_release or multiplier <= 1:
            return free
        target = self.concurrency * multiplier
        held = self.executor.capacity - self.executor.free_slots + len(self.prefetched)
        if held > target // 2 and held >= self.concurrency:
            return 0
        return max(target - held, free, 0)

    @property
    def can_release(self) -> bool:
        return type(self.queue).release_unknown is not QueuePlugin.release_unknown

    def paused_for(self) -> float:
        """Seconds the queue stays paused (0: not paused), by the local clock: only used to
        skip claims; the claim statement itself enforces the pause on the database clock."""
        if self.paused_until is None:
            return 0.0
        return max(0.0, (self.paused_until - datetime.now(timezone.utc)).total_seconds())


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
        self.plugins = list(app.plugins)
        if cluster_plugins and self.uses_postgres:
            for plugin in _missing_cluster_plugins(self.plugins):
                plugin.bind(app)
                self.plugins.append(plugin)
        self._settings_changed = asyncio.Event()
        self.is_leader = False
        self._worker_sql = WorkerSQL(app.names)
        self._rate_gate = rate_limits.RateGate(rate_limits.limits_for(app))
        self._cluster_sql = ClusterSQL(app.names)
        self._runners: dict[str, _QueueRunner] = {}
        self._held: dict[uuid.UUID, _QueueRunner] = {}
        #: Every job this worker claimed whose outcome is not yet written (running, or
        #: finished and waiting for write-back), with the attempt it claimed. Any other
        #: row the database has running under this worker's id is one it does not know
        #: of, and goes back to its queue.
        self._owned: dict[uuid.UUID, int] = {}
        self._unwritten: list[tuple[QueuePlugin, Transition]] = []
        #: Prefetched jobs handed to an executor that isolates jobs before their start was
        #: written; once it says one started, it moves to ``_unmarked``, whose start the
        #: next flush writes (or its outcome's write-back does).
        self._handed_unmarked: set[uuid.UUID] = set()
        self._unmarked: set[uuid.UUID] = set()
        #: When isolating executors really started the jobs they were handed (prefetched
        #: jobs are claimed with no start): for their log line's and hooks' duration.
        self._child_starts: dict[uuid.UUID, datetime] = {}
        self._outcome_ready = asyncio.Event()
        #: One flush at a time: the shutdown's final flush waits for one under way in the
        #: flush loop (it took the batch) rather than find nothing and cancel it mid-write.
        self._flushing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        #: The stop signals received, in order (the CLI's exit code tells SIGINT from SIGTERM).
        self.received_signals: list[signal.Signals] = []
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._leader_tasks: list[asyncio.Task] = []
        self._unsubscribe: list[Any] = []

    # --- public control -------------------------------------------------------------------
    async def wait_until_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    def request_stop(self, hard: bool = False) -> None:
        """Drain (finish running jobs, claim nothing new); ``hard`` stops running jobs too."""
        if hard or self._stopping.is_set():
            self._hard_stop.set()
        self._stopping.set()
        for runner in self._runners.values():
            runner.wake.set()

    async def stop(self, hard: bool = False) -> None:
        self.request_stop(hard)

    @property
    def stopped_hard(self) -> bool:
        """Whether running jobs were stopped rather than drained (a second signal)."""
        return self._hard_stop.is_set()

    @property
    def running_jobs(self) -> set[uuid.UUID]:
        return set(self._held)

    # --- main ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Run until :meth:`request_stop` or a signal; returns after a clean shutdown."""
        loop = asyncio.get_running_loop()
        if self.uses_postgres:
            listener = await self._reach_database()
            sql_ = self.app.job_sql
            self._unsubscribe += [
                listener.subscribe(sql_.pushed_channel, self._on_pushed),
                listener.subscribe(sql_.cancel_channel, self._on_cancel),
                listener.on_reconnect(self._wake_all),
                listener.subscribe(sql_.queues_channel, lambda _name: self._settings_changed.set()),
                listener.on_reconnect(self._settings_changed.set),
            ]
        for queue in self.queues:
            executor = queue.make_executor()
            executor.on_start = self._on_start
            await executor.start()
            runner = _QueueRunner(queue, executor, asyncio.Event())
            self._runners[queue.name] = runner
            self._unsubscribe.append(queue.watch(runner.wake.set, self._cancel_running))
        if self.uses_postgres:
            await self._load_settings()
        signals = self._install_signals(loop)
        self._tasks = [loop.create_task(self._claim_loop(r), name=f"chancy-claim-{r.queue.name}")
                       for r in self._runners.values()]
        self._tasks.append(loop.create_task(self._flush_loop(), name="chancy-writeback"))
        if self.uses_postgres:
            self._tasks.append(loop.create_task(self._heartbeat_loop(), name="chancy-heartbeat"))
            self._tasks.append(loop.create_task(self._settings_loop(), name="chancy-settings"))
        self._tasks += [loop.create_task(plugin.run(self), name=f"chancy-plugin-{type(plugin).__name__}")
                        for plugin in self.plugins if not plugin.leader_only]
        log.info("worker %s started on queues %s", self.worker_id, [q.name for q in self.queues])
        if self._rate_gate.limits:
            log.info("task rate limits (cluster-wide): %s", rate_limits.describe(self._rate_gate.limits))
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
                await self._heartbeat_once()
                return await self.app.listener()
            except Exception as exc:
                delay = next(delays, None)
                if delay is None or not is_unreachable(exc) or self._stopping.is_set():
                    raise
                log.warning("database unreachable at start (%s); retrying in %.1fs", exc, delay)
            await self._sleep(delay)

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
        installed = []
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

    # --- claiming -----------------------------------------------------------------------------
    async def _claim_loop(self, runner: _QueueRunner) -> None:
        await self._claim_until_stopped(runner)
        if runner.retired and not self._stopping.is_set():
            await self._retire(runner)

    async def _claim_until_stopped(self, runner: _QueueRunner) -> None:
        delay = 0.1
        while not self._stopping.is_set() and not runner.retired:
            runner.wake.clear()
            paused_for = runner.paused_for()
            if paused_for > 0:
                if runner.prefetched:
                    await self._release_prefetched(runner)
                await self._wait_for_wake(runner, min(paused_for, runner.queue.polling_interval))
                continue
            self._feed(runner)
            free = runner.claim_room(self.prefetch_multiplier)
            if free > 0:
                finished = self._take_unwritten(runner.queue)
                try:
                    if runner.reconcile:
                        await self._reconcile(runner)
                    start = self._start_count(runner)
                    records = await runner.queue.write_back_and_claim(self.worker_id, finished, free, start)
                except Exception as exc:  # noqa: BLE001 - the database may come back
                    # The claim may have committed with its answer lost: look before the next.
                    runner.reconcile = True
                    refused = 0 if is_connection_error(exc) else 1
                    self._unwritten = [(runner.queue, dataclasses.replace(t, refusals=t.refusals + refused))
                                       for t in finished] + self._unwritten
                    if finished:
                        self._outcome_ready.set()
                    log.warning("claim on %r failed (%s); retrying in %.1fs", runner.queue.name, exc, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.1
                self._disown(finished)
                await self._start(runner, records)
                runner.saturated = len(records) == free
                if runner.saturated and runner.claim_room(self.prefetch_multiplier) > 0:
                    continue
            await self._wait_for_wake(runner, runner.queue.polling_interval)
        withdrawn = runner.executor.withdraw()
        for record in withdrawn:
            self._handed_unmarked.discard(record.id)
            self._unmarked.discard(record.id)
        runner.prefetched.extend(withdrawn)
        if runner.prefetched:
            await self._release_prefetched(runner)

    def _start_count(self, runner: _QueueRunner) -> int | None:
        """How many of the jobs claimed next start at once (None: all, no prefetch): as
        many as there are free slots; none for an executor that isolates jobs (it says
        when each starts)."""
        if self.prefetch_multiplier <= 1 or not runner.can_release:
            return None
        if runner.executor.isolates_jobs:
            return 0
        return max(0, runner.free_slots - len(runner.prefetched))

    async def _reconcile(self, runner: _QueueRunner) -> None:
        first = not runner.reconciled_once
        released = await runner.queue.release_unknown(self.worker_id, self._owned, previous_life=first)
        runner.reconcile, runner.reconciled_once = False, True
        for job_id in released:
            if first:
                log.warning("job %s was left running by an earlier worker with this id (%s); recovered, "
                            "the attempt counted", job_id, self.worker_id)
            else:
                log.warning("job %s was claimed by this worker on %r without its knowledge (a lost answer); "
                            "it went back to the queue, its attempt refunded", job_id, runner.queue.name)

    async def _start(self, runner: _QueueRunner, records: list[JobRecord]) -> None:
        """Hand claimed jobs (past the rate gate) to the executor."""
        self._owned.update((r.id, r.attempts) for r in records)
        if self._rate_gate.limits:
            admitted = await self._rate_gate.admit(runner.queue, self.worker_id, records, runner.wake.set,
                                                   self._stopping)
            for deferred in {r.id for r in records} - {r.id for r in admitted}:  # no longer ours
                del self._owned[deferred]
            # The gate wrote the start of the limited jobs it admitted (the start their
            # window counts): they are marked, a mark would find no unstarted row to mark.
            gated_at = datetime.now(timezone.utc)
            records = [dataclasses.replace(r, started_at=gated_at)
                       if r.started_at is None and r.func in self._rate_gate.limits else r for r in admitted]
        self._submit_all(runner, records)

    def _submit_all(self, runner: _QueueRunner, records: list[JobRecord]) -> None:
        """Prefetch the claimed jobs, best first (as claimed), then start as many as
        there are free slots."""
        starting: list[JobRecord] = []
        for record in sorted(records, key=_claim_order):
            if record.id in self._held:
                self._release_reclaimed(runner, record)
                continue
            if isinstance(record, UndecodableRecord):
                self._fail_undecodable(runner, record)
                continue
            self._held[record.id] = runner
            if record.started_at is not None:  # its claim marked it started
                runner.marked.add(record.id)
                starting.append(record)
            else:
                runner.prefetched.append(record)
        runner.prefetched.extendleft(reversed(starting))  # the best ones, which start now
        self._feed(runner)

    def _feed(self, runner: _QueueRunner) -> None:
        """Hand prefetched jobs marked started to the executor while it has free slots;
        mark the next ones once half its slots are free (one statement for several); then,
        if the prefetch ran low and the queue had more, wake the claim loop."""
        runner.feed_scheduled = False
        if self._stopping.is_set() or runner.retired or runner.paused_for() > 0:
            return
        prefetched, executor, marked = runner.prefetched, runner.executor, runner.marked
        free = runner.free_slots
        isolated = executor.isolates_jobs
        while free > 0 and prefetched and (isolated or prefetched[0].id in marked):
            free -= 1
            record = prefetched.popleft()
            if record.id in marked:
                marked.discard(record.id)
            elif isolated and record.started_at is None:
                self._handed_unmarked.add(record.id)
            if record.started_at is None and not isolated:  # prefetched: it starts now
                record = dataclasses.replace(record, started_at=datetime.now(timezone.utc))
            _log_start(record)
            try:
                executor.submit(record, lambda outcome, r=record: self._on_outcome(runner, r, outcome))
            except Exception as exc:  # noqa: BLE001 - e.g. arguments the executor cannot hand over
                log.exception("job %s could not be started", record.id)
                self._on_outcome(runner, record, Outcome.failure(record.id, exc, final=True))
        if (free > 0 and prefetched and runner.marking is None
                and (free >= (executor.capacity + 1) // 2 or executor.free_slots == executor.capacity)):
            batch = [record.id for record, _ in zip(prefetched, range(free))]
            runner.marking = asyncio.get_running_loop().create_task(self._mark_started(runner, batch))
        if runner.saturated and runner.claim_room(self.prefetch_multiplier) > 0:
            runner.wake.set()

    def _on_start(self, job_id: uuid.UUID) -> None:
        """An isolating executor started a job: write its start with the next flush."""
        self._child_starts[job_id] = datetime.now(timezone.utc)
        if job_id in self._handed_unmarked:
            self._unmarked.add(job_id)
            self._outcome_ready.set()

    async def _write_starts(self) -> bool:
        """Write the start of the jobs isolating executors started since the last flush."""
        started = list(self._unmarked)
        try:
            async with self.app.connection() as conn:
                await drive_async(conn, single(self._worker_sql.mark_started(self.worker_id, started)))
        except Exception as exc:  # noqa: BLE001 - keep them until the database is back
            log.warning("writing the start of %d job(s) failed (%s); will retry", len(started), exc)
            return False
        self._unmarked.difference_update(started)
        self._handed_unmarked.difference_update(started)
        return True

    async def _mark_started(self, runner: _QueueRunner, job_ids: list[uuid.UUID]) -> None:
        """Write that these prefetched jobs start, then start them: from then on a crash
        counts their attempt (recovery refunds it only for a job never marked)."""
        try:
            async with self.app.connection() as conn:
                marked = await drive_async(conn, single(self._worker_sql.mark_started(self.worker_id, job_ids)))
        except Exception as exc:  # noqa: BLE001 - the next feed tries again
            log.warning("marking %d prefetched job(s) started failed (%s); will retry", len(job_ids), exc)
            await self._sleep(0.5)
        else:
            runner.marked.update(marked)  # a row locked meanwhile (a cancel) is tried again
        finally:
            runner.marking = None
        self._feed(runner)

    def _schedule_feed(self, runner: _QueueRunner) -> None:
        """Feed once the executor has freed the slot of the outcome being reported (an
        executor reports before it frees), once per turn of the loop however many finish."""
        if not runner.feed_scheduled:
            runner.feed_scheduled = True
            asyncio.get_running_loop().call_soon(self._feed, runner)

    async def _release_prefetched(self, runner: _QueueRunner) -> None:
        """Hand the prefetched jobs back to their queue unstarted, the attempt their claim
        counted refunded (a stop, a pause, a deleted queue). If the database cannot be
        reached, recovery hands them back once this worker's heartbeat has expired."""
        if runner.marking is not None:
            await asyncio.shield(runner.marking)
        records, runner.prefetched = list(runner.prefetched), collections.deque()
        runner.marked.clear()
        for record in records:
            self._held.pop(record.id, None)
            self._owned.pop(record.id, None)
        try:
            released = await runner.queue.release_unknown(self.worker_id, self._owned)
        except Exception as exc:  # noqa: BLE001 - recovery takes them back later
            log.warning("could not hand %d prefetched job(s) of queue %r back (%s); recovery will",
                        len(records), runner.queue.name, exc)
            return
        log.info("handed %d prefetched job(s) of queue %r back unstarted", len(released), runner.queue.name)

    def _fail_undecodable(self, runner: _QueueRunner, record: UndecodableRecord) -> None:
        """Its stored data cannot be read here, so it can never run: fail it for good."""
        error = {"type": "chancy.UndecodableJob", "at": datetime.now(timezone.utc).isoformat(), "traceback": None,
                 "message": f"the job's stored data cannot be decoded ({record.problem}); it was not run"}
        transition = Transition(record.id, JobState.FAILED, error=serialization.storable(error),
                                attempt=record.attempts)
        _log_outcome(record, transition)
        self._unwritten.append((runner.queue, with_follow_ups(self.app, record, transition)))
        self._outcome_ready.set()

    async def _wait_for_wake(self, runner: _QueueRunner, timeout: float) -> None:
        try:
            await asyncio.wait_for(runner.wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _release_reclaimed(self, runner: _QueueRunner, record: JobRecord) -> None:
        """We claimed a job that an older attempt of ours is still running: recovery gave
        it away while we were cut off, and it came back to us. Running it twice here is
        wrong and the old attempt's outcome no longer counts (it is stale), so send the
        new attempt back to be retried, without charging it to the job's budget."""
        log.warning("job %s was recovered while still running here and claimed again; releasing it", record.id)
        error = {"type": "chancy.ReclaimedWhileRunning", "at": datetime.now(timezone.utc).isoformat(),
                 "message": "claimed again by the worker still running its previous attempt", "traceback": None}
        self._unwritten.append((runner.queue, Transition(
            record.id, JobState.RETRYING, error=error, delay=1.0,
            max_attempts=max(record.max_attempts, record.attempts + 1), attempt=record.attempts)))
        self._outcome_ready.set()

    def _on_pushed(self, queue_name: str) -> None:
        runner = self._runners.get(queue_name)
        if runner is not None:
            runner.wake.set()

    def _wake_all(self) -> None:
        for runner in self._runners.values():
            runner.wake.set()

    def _on_cancel(self, job_id: str) -> None:
        self._cancel_running(uuid.UUID(job_id))

    def _cancel_running(self, job_id: uuid.UUID) -> None:
        runner = self._held.get(job_id)
        if runner is None:
            return
        if runner.executor.cancel(job_id):
            log.info("cancelling running job %s", job_id)
            return
        record = next((r for r in runner.prefetched if r.id == job_id), None)
        if record is not None:  # cancelled, or taken away, before it started: never run it
            runner.prefetched.remove(record)
            runner.marked.discard(job_id)
            log.info("cancelling prefetched job %s before it started", job_id)
            self._on_outcome(runner, record, Outcome.failure(
                job_id, JobCancelledError("The job was cancelled before it started"), final=True, cancelled=True))

    # --- outcomes -------------------------------------------------------------------------------
    def _on_outcome(self, runner: _QueueRunner, record: JobRecord, outcome: Outcome) -> None:
        self._held.pop(record.id, None)
        started = self._child_starts.pop(record.id, None)
        if record.started_at is None:  # a prefetched job a child started: when it did
            record = dataclasses.replace(record, started_at=started)
        if self._handed_unmarked:
            self._handed_unmarked.discard(record.id)
            self._unmarked.discard(record.id)  # its write-back marks it started
        transition = with_follow_ups(self.app, record, decide(record, outcome))
        _log_outcome(record, transition)
        self._unwritten.append((runner.queue, transition))
        self._outcome_ready.set()
        self._schedule_feed(runner)

    def _take_unwritten(self, queue: QueuePlugin) -> list[Transition]:
        """The queue's buffered outcomes, to write with its next claim (in a drain they are
        what freed the slots it claims for). Outcomes with follow-ups stay for the flush
        loop: a follow-up that keeps failing must not hold up claims."""
        if not self._unwritten:
            return []
        taken: list[Transition] = []
        kept: list[tuple[QueuePlugin, Transition]] = []
        for entry in self._unwritten:
            if entry[0] is queue and entry[1].follow_up is None and not entry[1].refusals:
                taken.append(entry[1])
            else:
                kept.append(entry)
        self._unwritten = kept
        return taken

    async def _flush_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            if self.writeback_delay:
                await asyncio.sleep(self.writeback_delay)  # let a batch form
            await self._flush()

    async def _flush(self) -> bool:
        """Write buffered outcomes; on failure keep them for the next try. True if empty."""
        async with self._flushing:
            return await self._flush_held()

    async def _flush_held(self) -> bool:
        self._outcome_ready.clear()
        if self._unmarked and not await self._write_starts():
            await asyncio.sleep(0.5)
            self._outcome_ready.set()
            return False
        batch, self._unwritten = self._unwritten, []
        if not batch:
            return True
        by_queue: dict[int, tuple[QueuePlugin, list[Transition]]] = {}
        for queue, transition in batch:
            by_queue.setdefault(id(queue), (queue, []))[1].append(transition)
        failed: list[tuple[QueuePlugin, Transition]] = []
        for queue, transitions in by_queue.values():
            failed += [(queue, t) for t in await self._write(queue, transitions)]
        if failed:
            self._unwritten = failed + self._unwritten
            await asyncio.sleep(0.5)
            self._outcome_ready.set()
            return False
        return not self._unwritten

    async def _write(self, queue: QueuePlugin, transitions: list[Transition]) -> list[Transition]:
        """Write outcomes; returns those to try again once the database is back. A batch
        the database refuses is written one outcome at a time, so that only the refused
        one is replaced (by a failure) and the others are written as they are."""
        try:
            await queue.write_back(self.worker_id, transitions)
        except Exception as exc:  # noqa: BLE001 - keep outcomes until the database is back
            if is_connection_error(exc):
                log.warning("writing %d outcome(s) failed (%s); will retry", len(transitions), exc)
                return transitions
            if len(transitions) > 1:
                kept = []
                for transition in transitions:
                    kept += await self._write(queue, [transition])
                return kept
            return await self._write_refused(queue, transitions[0], exc)
        self._disown(transitions)
        return []

    def _disown(self, written: Iterable[Transition]) -> None:
        """Forget jobs whose outcome is written, unless claimed again since (by then the
        flush that wrote a retry may finish after the claim that took the job back)."""
        for transition in written:
            if self._owned.get(transition.job_id) == transition.attempt:
                del self._owned[transition.job_id]

    async def _write_refused(self, queue: QueuePlugin, refused: Transition, exc: Exception) -> list[Transition]:
        """The database refused this outcome: fail the job with an error saying so, rather
        than retry without end a write that may never succeed. A follow-up (the next step
        of a workflow) may depend on other rows, so it gets a few more tries first."""
        if refused.follow_up is not None and refused.refusals < FOLLOW_UP_TRIES:
            log.warning("writing the outcome of job %s with its follow-up failed (%s); try %d of %d",
                        refused.job_id, exc, refused.refusals + 1, FOLLOW_UP_TRIES)
            return [dataclasses.replace(refused, refusals=refused.refusals + 1)]
        log.error("the database refused the outcome (%s) of job %s: %s; failing the job instead",
                  refused.state.value, refused.job_id, exc)
        error = {"type": "chancy.OutcomeNotStorable", "at": datetime.now(timezone.utc).isoformat(), "traceback": None,
                 "message": f"the database refused this attempt's outcome ({refused.state.value}): {exc}"}
        failure = Transition(refused.job_id, JobState.FAILED, error=serialization.storable(error), attempt=refused.attempt)
        try:
            await queue.write_back(self.worker_id, [failure])
        except Exception as again:  # noqa: BLE001
            if is_connection_error(again):
                return [failure]
            log.error("job %s: its failure could not be written either (%s); it goes back to its queue",
                      refused.job_id, again)
            self._runners[queue.name].reconcile = True
        self._disown([refused])
        return []

    # --- heartbeat ------------------------------------------------------------------------------
    async def _heartbeat_once(self) -> None:
        statement = self._worker_sql.heartbeat(
            self.worker_id, socket.gethostname(), os.getpid(), [q.name for q in self.queues],
            self.tags, [job_id for job_id, r in self._held.items() if isinstance(r.queue, PgQueue)],
            self.liveness_timeout,
        )
        async with self.app.connection() as conn:
            lost = await drive_async(conn, single(statement))
        for job_id in lost:
            log.warning("job %s was cancelled or taken away while running here; stopping it", job_id)
            self._cancel_running(job_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for runner in self._runners.values():  # a lost claim answer goes unnoticed otherwise
                runner.reconcile = True
            try:
                await self._heartbeat_once()
            except Exception as exc:  # noqa: BLE001 - keep running through outages
                log.warning("heartbeat failed (%s)", exc)

    # --- runtime queue settings -------------------------------------------------------------------
    async def _load_settings(self) -> None:
        pg_runners = [r for r in self._runners.values() if isinstance(r.queue, PgQueue)]
        names = None if self.serves_declared else [r.queue.name for r in pg_runners]
        async with self.app.connection() as conn:
            rows = {row.name: row for row in await drive_async(conn, single(self._cluster_sql.queue_list(names)))}
        for name in rows.keys() - self._runners.keys():
            pg_runners.append(await self._serve_declared(name))
        for runner in pg_runners:
            row = rows.get(runner.queue.name)
            if runner.declared:
                if row is None:
                    runner.retired = True
                    runner.wake.set()
                    continue
                runner.executor.concurrency = row.concurrency or 1  # its executor has no fixed pool
            paused_until = row.paused_until if row else None
            cap = row.concurrency if row else None
            if (paused_until, cap) != (runner.paused_until, runner.concurrency_cap):
                log.info("queue %r: %s, concurrency %s", runner.queue.name,
                         f"paused until {paused_until:%Y-%m-%d %H:%M:%S}" if paused_until else "running",
                         cap or runner.executor.concurrency)
                runner.paused_until, runner.concurrency_cap = paused_until, cap
                runner.wake.set()

    async def _serve_declared(self, name: str) -> _QueueRunner:
        queue = PgQueue(name, concurrency=1, executor="asyncio")
        queue.bind(self.app)
        executor = queue.make_executor()
        executor.on_start = self._on_start
        await executor.start()
        runner = _QueueRunner(queue, executor, asyncio.Event(), declared=True)
        self._runners[name] = runner
        self.queues.append(queue)
        if self._ready.is_set():  # else start() is about to start every runner's claim loop
            self._tasks.append(asyncio.get_running_loop().create_task(self._claim_loop(runner),
                                                                      name=f"chancy-claim-{name}"))
        log.info("serving queue %r (declared at runtime)", name)
        return runner

    async def _retire(self, runner: _QueueRunner) -> None:
        """A deleted declaration: let its running jobs finish, then forget the queue."""
        log.info("queue %r was deleted; draining it", runner.queue.name)
        await runner.executor.stop(self.shutdown_timeout)
        self._runners.pop(runner.queue.name, None)
        self.queues.remove(runner.queue)

    async def _settings_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._settings_changed.wait(), self.settings_interval)
            except asyncio.TimeoutError:
                pass
            self._settings_changed.clear()
            try:
                await self._load_settings()
            except Exception as exc:  # noqa: BLE001 - keep the last known settings through outages
                log.warning("reading queue settings failed (%s)", exc)

    # --- leadership -----------------------------------------------------------------------------
    def set_leader(self, is_leader: bool) -> None:
        """Called by the leadership plugin: start or stop the leader-only plugins."""
        if is_leader == self.is_leader:
            return
        self.is_leader = is_leader
        if is_leader:
            loop = asyncio.get_running_loop()
            self._leader_tasks = [loop.create_task(p.run(self), name=f"chancy-leader-{type(p).__name__}")
                                  for p in self.plugins if p.leader_only]
        else:
            for task in self._leader_tasks:
                task.cancel()
            self._leader_tasks = []

    # --- shutdown -------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        started = time.monotonic()
        for runner in self._runners.values():
            runner.wake.set()
        claimers = [t for t in self._tasks if t.get_name().startswith("chancy-claim-")]
        await asyncio.gather(*claimers, return_exceptions=True)
        timeout = 0.0 if self._hard_stop.is_set() else self.shutdown_timeout
        drains = [asyncio.ensure_future(r.executor.stop(timeout)) for r in self._runners.values()]
        hard = asyncio.ensure_future(self._hard_stop.wait())
        await asyncio.wait([*drains, hard], return_when=asyncio.FIRST_COMPLETED)
        if hard.done() and not all(d.done() for d in drains):
            await asyncio.gather(*(r.executor.stop(0) for r in self._runners.values()), return_exceptions=True)
        await asyncio.gather(*drains, return_exceptions=True)
        hard.cancel()
        # Write back every outcome we hold, retrying through a short outage.
        deadline = time.monotonic() + max(10.0, self.shutdown_timeout)
        while not await self._flush() and time.monotonic() < deadline:
            pass
        if self._unwritten:
            log.error("%d outcome(s) could not be written; those jobs will be recovered and re-run",
                      len(self._unwritten))
        for task in self._tasks + self._leader_tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._leader_tasks, return_exceptions=True)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self.uses_postgres:
            try:
                async with self.app.connection() as conn:
                    await drive_async(conn, single(self._worker_sql.deregister(self.worker_id)))
            except Exception as exc:  # noqa: BLE001
                log.warning("could not deregister worker (%s)", exc)
        log.info("worker %s stopped after %.1fs of shutdown", self.worker_id, time.monotonic() - started)


def _claim_order(record: JobRecord) -> tuple[int, uuid.UUID]:
    """The claim's order (priority, then age: job ids grow with time); its answer has none."""
    return -record.priority, record.id


def _job_fields(record: JobRecord) -> dict[str, Any]:
    """The fields of a job's log lines, for structured (JSON) logging: see chancy.logs."""
    return {"job_id": str(record.id), "task": record.func, "queue": record.queue,
            "attempt": record.attempts, "max_attempts": record.max_attempts}


def _log_start(record: JobRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("job %s task=%s queue=%s attempt=%d/%d started", record.id, record.func, record.queue,
                 record.attempts, record.max_attempts, extra=_job_fields(record))


def _log_outcome(record: JobRecord, transition: Transition) -> None:
    level = logging.INFO if transition.state is JobState.SUCCEEDED else logging.WARNING
    if log.isEnabledFor(level):
        duration = (time.time() - record.started_at.timestamp()) if record.started_at else 0.0
        error = f"{transition.error['type']}: {transition.error['message']}" if transition.error else None
        fields = {**_job_fields(record), "outcome": transition.state.value, "duration": round(duration, 6),
                  "error": error}
        log.log(level, "job %s task=%s queue=%s attempt=%d/%d outcome=%s duration=%.3fs%s",
                record.id, record.func, record.queue, record.attempts, record.max_attempts,
                transition.state.value, duration, f" error={error}" if error else "", extra=fields)


def _missing_cluster_plugins(plugins: Sequence[Plugin]) -> list[Plugin]:
    """Leadership and recovery, unless configured: without them a crashed worker's jobs
    would stay ``running`` forever."""
    from chancy.plugins.leadership import Leadership
    from chancy.plugins.recovery import Recovery

    return [cls() for cls in (Leadership, Recovery) if not any(isinstance(p, cls) for p in plugins)]
