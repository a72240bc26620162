"""The completer: the outcomes of a worker's jobs, buffered and written back in batches
(one flush at a time, the final one at stop), with the start of jobs that an isolating
executor started before their start was written."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable

from chancy.app import Chancy
from chancy.faults import is_connection_error
from chancy.job import JobRecord, JobState
from chancy.queue import QueuePlugin, Transition
from chancy.store.pg.statements import single
from chancy.worker.outcomes import with_start, worker_error

log = logging.getLogger("chancy.worker")

#: Tries of an outcome whose follow-up the database refuses, before the job fails instead.
FOLLOW_UP_TRIES = 5


class Completer:
    """Writes the outcomes of one worker's jobs. ``owned`` is every job the worker claimed
    whose outcome is not yet written, with the attempt it claimed (shared with its
    producers); ``lost_track`` is told of a queue one of whose jobs' outcome could not be
    written at all (its producer then hands back what it does not know of)."""

    def __init__(self, app: Chancy, worker_id: str, writeback_delay: float, owned: dict[uuid.UUID, int],
                 lost_track: Callable[[QueuePlugin], None]) -> None:
        self.app = app
        self.worker_id = worker_id
        self.writeback_delay = writeback_delay
        self.owned = owned
        self._lost_track = lost_track
        self.unwritten: list[tuple[QueuePlugin, Transition]] = []
        #: Prefetched jobs handed to an executor that isolates jobs before their start was
        #: written; once it says one started, it moves to ``_unmarked``, whose start the
        #: next flush writes (or its outcome's write-back does).
        self.handed_unmarked: set[uuid.UUID] = set()
        self._unmarked: set[uuid.UUID] = set()
        #: When isolating executors really started the jobs they were handed (prefetched
        #: jobs are claimed with no start): for their log line's and hooks' duration.
        self._child_starts: dict[uuid.UUID, datetime] = {}
        self.outcome_ready = asyncio.Event()
        #: One flush at a time: the shutdown's final flush waits for one under way in the
        #: flush loop (it took the batch) rather than find nothing and cancel it mid-write.
        self._flushing = asyncio.Lock()

    # --- what producers hand over ---------------------------------------------------------
    def add(self, queue: QueuePlugin, transition: Transition) -> None:
        self.unwritten.append((queue, transition))
        self.outcome_ready.set()

    def take(self, queue: QueuePlugin) -> list[Transition]:
        """The queue's buffered outcomes, to write with its next claim (in a drain they are
        what freed the slots it claims for). Outcomes with follow-ups stay for the flush
        loop: a follow-up that keeps failing must not hold up claims."""
        if not self.unwritten:
            return []
        taken: list[Transition] = []
        kept: list[tuple[QueuePlugin, Transition]] = []
        for entry in self.unwritten:
            if entry[0] is queue and entry[1].follow_up is None and not entry[1].refusals:
                taken.append(entry[1])
            else:
                kept.append(entry)
        self.unwritten = kept
        return taken

    def give_back(self, queue: QueuePlugin, taken: list[Transition], refused: bool) -> None:
        """Outcomes :meth:`take` gave to a claim that failed: written by a later flush (one
        refusal more if the database refused them rather than could not be reached)."""
        self.unwritten = [(queue, dataclasses.replace(t, refusals=t.refusals + int(refused)))
                          for t in taken] + self.unwritten
        if taken:
            self.outcome_ready.set()

    def on_start(self, job_id: uuid.UUID) -> None:
        """An isolating executor started a job: write its start with the next flush."""
        self._child_starts[job_id] = datetime.now(timezone.utc)
        if job_id in self.handed_unmarked:
            self._unmarked.add(job_id)
            self.outcome_ready.set()

    def forget_start(self, job_id: uuid.UUID) -> None:
        """A job handed to an isolating executor came back unrun (withdrawn)."""
        self.handed_unmarked.discard(job_id)
        self._unmarked.discard(job_id)

    def finished(self, record: JobRecord) -> JobRecord:
        """``record`` as it finished: a prefetched job a child started has that start, and
        its write-back (not a flush of starts) writes it."""
        started = self._child_starts.pop(record.id, None)
        if record.started_at is None:
            record = with_start(record, started)
        if self.handed_unmarked:
            self.handed_unmarked.discard(record.id)
            self._unmarked.discard(record.id)
        return record

    def disown(self, written: Iterable[Transition]) -> None:
        """Forget jobs whose outcome is written, unless claimed again since (by then the
        flush that wrote a retry may finish after the claim that took the job back)."""
        for transition in written:
            if self.owned.get(transition.job_id) == transition.attempt:
                del self.owned[transition.job_id]

    # --- writing ----------------------------------------------------------------------------
    async def run(self) -> None:
        """The flush loop: a batch a moment after the first outcome, until cancelled."""
        while True:
            await self.outcome_ready.wait()
            if self.writeback_delay:
                await asyncio.sleep(self.writeback_delay)  # let a batch form
            await self.flush()

    async def flush(self) -> bool:
        """Write buffered outcomes; on failure keep them for the next try. True if empty."""
        async with self._flushing:
            return await self._flush_held()

    async def final_flush(self, timeout: float) -> None:
        """Write back every outcome held, retrying through a short outage (at a stop)."""
        deadline = time.monotonic() + timeout
        while not await self.flush() and time.monotonic() < deadline:
            pass
        if self.unwritten:
            log.error("%d outcome(s) could not be written; those jobs will be recovered and re-run",
                      len(self.unwritten))

    async def _flush_held(self) -> bool:
        self.outcome_ready.clear()
        if self._unmarked and not await self._write_starts():
            await asyncio.sleep(0.5)
            self.outcome_ready.set()
            return False
        batch, self.unwritten = self.unwritten, []
        if not batch:
            return True
        by_queue: dict[int, tuple[QueuePlugin, list[Transition]]] = {}
        for queue, transition in batch:
            by_queue.setdefault(id(queue), (queue, []))[1].append(transition)
        failed: list[tuple[QueuePlugin, Transition]] = []
        for queue, transitions in by_queue.values():
            failed += [(queue, t) for t in await self._write(queue, transitions)]
        if failed:
            self.unwritten = failed + self.unwritten
            await asyncio.sleep(0.5)
            self.outcome_ready.set()
            return False
        return not self.unwritten

    async def _write_starts(self) -> bool:
        """Write the start of the jobs isolating executors started since the last flush."""
        started = list(self._unmarked)
        try:
            await self.app.store.run(single(self.app.store.worker.mark_started(self.worker_id, started)))
        except Exception as exc:  # noqa: BLE001 - keep them until the database is back
            log.warning("writing the start of %d job(s) failed (%s); will retry", len(started), exc)
            return False
        self._unmarked.difference_update(started)
        self.handed_unmarked.difference_update(started)
        return True

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
        self.disown(transitions)
        return []

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
        error = worker_error("OutcomeNotStorable",
                             f"the database refused this attempt's outcome ({refused.state.value}): {exc}")
        failure = Transition(refused.job_id, JobState.FAILED, error=error, attempt=refused.attempt)
        try:
            await queue.write_back(self.worker_id, [failure])
        except Exception as again:  # noqa: BLE001
            if is_connection_error(again):
                return [failure]
            log.error("job %s: its failure could not be written either (%s); it goes back to its queue",
                      refused.job_id, again)
            self._lost_track(queue)
        self.disown([refused])
        return []
