"""The producer of one queue: its claim loop, the jobs it prefetched, and the feeding of
its executor (a job starts only once its start is written, so that a job that crashes
its worker uses an attempt)."""

from __future__ import annotations

import asyncio
import contextlib
import collections
import dataclasses
import functools
import logging
import uuid
from datetime import datetime, timezone

from chancy import rate_limits
from chancy.app import Chancy
from chancy.errors import JobCancelledError
from chancy.execution import Outcome
from chancy.executors.base import Executor
from chancy.faults import is_connection_error
from chancy.job import JobRecord, JobState, UndecodableRecord
from chancy.queue import QueuePlugin, Transition
from chancy.store.pg.statements import single
from chancy.worker.completer import Completer
from chancy.worker.outcomes import claim_order, decide, log_outcome, log_start, with_start, worker_error

log = logging.getLogger("chancy.worker")


@dataclasses.dataclass
class ProducerContext:
    """What the producers of one worker share."""

    app: Chancy
    worker_id: str
    #: Jobs claimed per slot of a queue, running ones included.
    prefetch_multiplier: int
    rate_gate: rate_limits.RateGate
    stopping: asyncio.Event
    completer: Completer
    #: Every job handed to a producer (prefetched or running), by id.
    held: dict[uuid.UUID, "QueueProducer"] = dataclasses.field(default_factory=dict)
    #: Every job this worker claimed whose outcome is not yet written (running, or
    #: finished and waiting for write-back), with the attempt it claimed. Any other row
    #: the database has running under this worker's id is one it does not know of, and
    #: goes back to its queue.
    owned: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)

    async def sleep(self, seconds: float) -> None:
        """Sleep, cut short by a stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()


class QueueProducer:
    """Claims jobs of one queue and feeds them to its executor, until the worker stops or
    the queue is retired (see the module's docstring)."""

    def __init__(self, queue: QueuePlugin, executor: Executor, context: ProducerContext,
                 declared: bool = False) -> None:
        self.queue = queue
        self.executor = executor
        self.context = context
        self.wake = asyncio.Event()
        self.saturated = False  # the last claim filled every free slot: more may be waiting
        #: Runtime settings (chancy.plugins.queues), re-read while running.
        self.paused_until: datetime | None = None
        self.concurrency_cap: int | None = None
        self.declared = declared  # served because it was declared at runtime, not in code
        self.retired = False  # its declaration was deleted: claim no more, drain, drop
        #: Before its next claim, hand back rows the database says this worker holds on
        #: the queue but the worker does not know of (a claim whose answer was lost).
        self.reconcile = True
        self.reconciled_once = False  # the first look finds an earlier process's rows
        #: Claimed jobs not handed to the executor yet (prefetched), oldest first.
        self.prefetched: collections.deque[JobRecord] = collections.deque()
        #: The prefetched jobs whose start is written (by their claim or a mark): only
        #: these are handed to the executor, so that a job that crashes its worker uses an
        #: attempt.
        self.marked: set[uuid.UUID] = set()
        #: The mark being written, if any: a hand-back waits for it, or the rows it holds
        #: would be skipped and left ``running`` (and it would mark rows handed back).
        self.marking: asyncio.Task[None] | None = None
        self.feed_scheduled = False

    # --- capacity -------------------------------------------------------------------------
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

    # --- claiming -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Claim and feed until the worker stops or the queue is retired, then hand the
        prefetched jobs back."""
        context = self.context
        multiplier = context.prefetch_multiplier
        delay = 0.1
        while not context.stopping.is_set() and not self.retired:
            self.wake.clear()
            paused_for = self.paused_for()
            if paused_for > 0:
                if self.prefetched:
                    await self._release_prefetched()
                await self._wait_for_wake(min(paused_for, self.queue.polling_interval))
                continue
            self.feed()
            free = self.claim_room(multiplier)
            if free > 0:
                finished = context.completer.take(self.queue)
                try:
                    if self.reconcile:
                        await self._reconcile()
                    start = self._start_count()
                    records = await self.queue.write_back_and_claim(context.worker_id, finished, free, start)
                except Exception as exc:  # noqa: BLE001 - the database may come back
                    # The claim may have committed with its answer lost: look before the next.
                    self.reconcile = True
                    context.completer.give_back(self.queue, finished, refused=not is_connection_error(exc))
                    log.warning("claim on %r failed (%s); retrying in %.1fs", self.queue.name, exc, delay)
                    await context.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.1
                context.completer.disown(finished)
                await self._start(records)
                self.saturated = len(records) == free
                if self.saturated and self.claim_room(multiplier) > 0:
                    continue
            await self._wait_for_wake(self.queue.polling_interval)
        withdrawn = self.executor.withdraw()
        for record in withdrawn:
            context.completer.forget_start(record.id)
        self.prefetched.extend(withdrawn)
        if self.prefetched:
            await self._release_prefetched()

    def _start_count(self) -> int | None:
        """How many of the jobs claimed next start at once (None: all, no prefetch): as
        many as there are free slots; none for an executor that isolates jobs (it says
        when each starts)."""
        if self.context.prefetch_multiplier <= 1 or not self.can_release:
            return None
        if self.executor.isolates_jobs:
            return 0
        return max(0, self.free_slots - len(self.prefetched))

    async def _reconcile(self) -> None:
        first = not self.reconciled_once
        worker_id = self.context.worker_id
        released = await self.queue.release_unknown(worker_id, self.context.owned, previous_life=first)
        self.reconcile, self.reconciled_once = False, True
        for job_id in released:
            if first:
                log.warning("job %s was left running by an earlier worker with this id (%s); recovered, "
                            "the attempt counted", job_id, worker_id)
            else:
                log.warning("job %s was claimed by this worker on %r without its knowledge (a lost answer); "
                            "it went back to the queue, its attempt refunded", job_id, self.queue.name)

    async def _start(self, records: list[JobRecord]) -> None:
        """Hand claimed jobs (past the rate gate) to the executor."""
        context = self.context
        context.owned.update((r.id, r.attempts) for r in records)
        gate = context.rate_gate
        if gate.limits:
            admitted = await gate.admit(self.queue, context.worker_id, records, self.wake.set, context.stopping)
            for deferred in {r.id for r in records} - {r.id for r in admitted}:  # no longer ours
                del context.owned[deferred]
            # The gate wrote the start of the limited jobs it admitted (the start their
            # window counts): they are marked, a mark would find no unstarted row to mark.
            gated_at = datetime.now(timezone.utc)
            records = [with_start(r, gated_at)
                       if r.started_at is None and r.func in gate.limits else r for r in admitted]
        self._submit_all(records)

    def _submit_all(self, records: list[JobRecord]) -> None:
        """Prefetch the claimed jobs, best first (as claimed), then start as many as
        there are free slots."""
        held = self.context.held
        starting: list[JobRecord] = []
        for record in sorted(records, key=claim_order):
            if record.id in held:
                self._release_reclaimed(record)
                continue
            if isinstance(record, UndecodableRecord):
                self._fail_undecodable(record)
                continue
            held[record.id] = self
            if record.started_at is not None:  # its claim marked it started
                self.marked.add(record.id)
                starting.append(record)
            else:
                self.prefetched.append(record)
        self.prefetched.extendleft(reversed(starting))  # the best ones, which start now
        self.feed()

    # --- feeding the executor ---------------------------------------------------------------
    def feed(self) -> None:
        """Hand prefetched jobs marked started to the executor while it has free slots;
        mark the next ones once half its slots are free (one statement for several); then,
        if the prefetch ran low and the queue had more, wake the claim loop."""
        self.feed_scheduled = False
        if self.context.stopping.is_set() or self.retired or self.paused_for() > 0:
            return
        prefetched, executor, marked = self.prefetched, self.executor, self.marked
        free = self.free_slots
        isolated = executor.isolates_jobs
        while free > 0 and prefetched and (isolated or prefetched[0].id in marked):
            free -= 1
            record = prefetched.popleft()
            if record.id in marked:
                marked.discard(record.id)
            elif isolated and record.started_at is None:
                self.context.completer.handed_unmarked.add(record.id)
            if record.started_at is None and not isolated:  # prefetched: it starts now
                record = with_start(record, datetime.now(timezone.utc))
            log_start(record)
            try:
                executor.submit(record, functools.partial(self.on_outcome, record))
            except Exception as exc:  # noqa: BLE001 - e.g. arguments the executor cannot hand over
                log.exception("job %s could not be started", record.id)
                self.on_outcome(record, Outcome.failure(record.id, exc, final=True))
        if (free > 0 and prefetched and self.marking is None
                and (free >= (executor.capacity + 1) // 2 or executor.free_slots == executor.capacity)):
            batch = [record.id for record, _ in zip(prefetched, range(free), strict=False)]
            self.marking = asyncio.get_running_loop().create_task(self._mark_started(batch))
        if self.saturated and self.claim_room(self.context.prefetch_multiplier) > 0:
            self.wake.set()

    async def _mark_started(self, job_ids: list[uuid.UUID]) -> None:
        """Write that these prefetched jobs start, then start them: from then on a crash
        counts their attempt (recovery refunds it only for a job never marked)."""
        store = self.context.app.store
        try:
            marked = await store.run(single(store.worker.mark_started(self.context.worker_id, job_ids)))
        except Exception as exc:  # noqa: BLE001 - the next feed tries again
            log.warning("marking %d prefetched job(s) started failed (%s); will retry", len(job_ids), exc)
            await self.context.sleep(0.5)
        else:
            self.marked.update(marked)  # a row locked meanwhile (a cancel) is tried again
        finally:
            self.marking = None
        self.feed()

    def _schedule_feed(self) -> None:
        """Feed once the executor has freed the slot of the outcome being reported (an
        executor reports before it frees), once per turn of the loop however many finish."""
        if not self.feed_scheduled:
            self.feed_scheduled = True
            asyncio.get_running_loop().call_soon(self.feed)

    # --- outcomes -------------------------------------------------------------------------------
    def on_outcome(self, record: JobRecord, outcome: Outcome) -> None:
        context = self.context
        context.held.pop(record.id, None)
        record = context.completer.finished(record)
        transition = context.app.hooks.with_follow_ups(record, decide(record, outcome))
        log_outcome(record, transition)
        context.completer.add(self.queue, transition)
        self._schedule_feed()

    def _fail_undecodable(self, record: UndecodableRecord) -> None:
        """Its stored data cannot be read here, so it can never run: fail it for good."""
        error = worker_error("UndecodableJob",
                             f"the job's stored data cannot be decoded ({record.problem}); it was not run")
        transition = Transition(record.id, JobState.FAILED, error=error, attempt=record.attempts)
        log_outcome(record, transition)
        self.context.completer.add(self.queue, self.context.app.hooks.with_follow_ups(record, transition))

    def _release_reclaimed(self, record: JobRecord) -> None:
        """We claimed a job that an older attempt of ours is still running: recovery gave
        it away while we were cut off, and it came back to us. Running it twice here is
        wrong and the old attempt's outcome no longer counts (it is stale), so send the
        new attempt back to be retried, without charging it to the job's budget."""
        log.warning("job %s was recovered while still running here and claimed again; releasing it", record.id)
        error = worker_error("ReclaimedWhileRunning", "claimed again by the worker still running its previous attempt")
        self.context.completer.add(self.queue, Transition(
            record.id, JobState.RETRYING, error=error, delay=1.0,
            max_attempts=max(record.max_attempts, record.attempts + 1), attempt=record.attempts))

    def cancel(self, job_id: uuid.UUID) -> None:
        """Stop a job of this queue: running, through its executor; prefetched, by never
        running it."""
        if self.executor.cancel(job_id):
            log.info("cancelling running job %s", job_id)
            return
        record = next((r for r in self.prefetched if r.id == job_id), None)
        if record is not None:  # cancelled, or taken away, before it started: never run it
            self.prefetched.remove(record)
            self.marked.discard(job_id)
            log.info("cancelling prefetched job %s before it started", job_id)
            self.on_outcome(record, Outcome.failure(
                job_id, JobCancelledError("The job was cancelled before it started"), final=True, cancelled=True))

    # --- handing back ---------------------------------------------------------------------------
    async def _release_prefetched(self) -> None:
        """Hand the prefetched jobs back to their queue unstarted, the attempt their claim
        counted refunded (a stop, a pause, a deleted queue). If the database cannot be
        reached, recovery hands them back once this worker's heartbeat has expired."""
        if self.marking is not None:
            await asyncio.shield(self.marking)
        records, self.prefetched = list(self.prefetched), collections.deque()
        self.marked.clear()
        context = self.context
        for record in records:
            context.held.pop(record.id, None)
            context.owned.pop(record.id, None)
        try:
            released = await self.queue.release_unknown(context.worker_id, context.owned)
        except Exception as exc:  # noqa: BLE001 - recovery takes them back later
            log.warning("could not hand %d prefetched job(s) of queue %r back (%s); recovery will",
                        len(records), self.queue.name, exc)
            return
        log.info("handed %d prefetched job(s) of queue %r back unstarted", len(released), self.queue.name)

    async def _wait_for_wake(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()
