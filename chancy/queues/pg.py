"""The Postgres queue: the default :class:`~chancy.queue.QueuePlugin`. It declares a queue
(``Queue("default", concurrency=…)``); its jobs are rows of the app's jobs table, which it
reads and writes only through the app's store (:class:`chancy.store.pg.job_store.PgJobStore`)."""

from __future__ import annotations

import functools
import uuid
from typing import Any, Collection, Mapping, Sequence

from chancy.job import Job, JobRecord
from chancy.queue import QueuePlugin, Transition, Verdict
from chancy.rate_limits import RateLimit
from chancy.store.pg.job_store import PgJobStore


class Queue(QueuePlugin):
    """A queue whose jobs are rows in the app's Postgres jobs table."""

    def bind(self, app: Any) -> None:
        super().bind(app)
        self.__dict__.pop("_jobs", None)  # its store is the new app's

    @functools.cached_property
    def _jobs(self) -> PgJobStore:
        """This queue's jobs in the app's database (the queue is bound once, before use)."""
        app = self.app
        if app is None:
            raise RuntimeError(f"Queue {self.name!r} is not attached to a Chancy app")
        (app.store.jobs.fair_queues.add if self.fair_keys else app.store.jobs.fair_queues.discard)(self.name)
        return PgJobStore(app.store, self.name, app.done_waiters)

    async def push(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        return await self._jobs.push(jobs, connection)

    def push_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[uuid.UUID]:
        if connection is None and len(jobs) == 1 and jobs[0].unique_key is None:
            return [self.push_one_sync(jobs[0])]
        return self._jobs.push_sync(jobs, connection)

    def push_one_sync(self, job: Job) -> uuid.UUID:
        """One job without a unique key: the lean path of ``.delay()`` and ``task.push_sync()``."""
        return self._jobs.push_one_sync(job)

    async def push_calls(self, template: Job, calls: Sequence[Sequence[Any]],
                         connection: Any = None) -> list[uuid.UUID]:
        if not self._jobs.copies_calls(template, len(calls)):
            return await super().push_calls(template, calls, connection)
        return await self._jobs.push_calls(template, calls, connection)

    def push_calls_sync(self, template: Job, calls: Sequence[Sequence[Any]], connection: Any = None) -> list[uuid.UUID]:
        if not self._jobs.copies_calls(template, len(calls)):
            return super().push_calls_sync(template, calls, connection)
        return self._jobs.push_calls_sync(template, calls, connection)

    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        return await self._jobs.get(job_id)

    def get_sync(self, job_id: uuid.UUID) -> JobRecord | None:
        return self._jobs.get_sync(job_id)

    async def wait(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        return await self._jobs.wait(job_id, timeout)

    def wait_sync(self, job_id: uuid.UUID, timeout: float | None) -> JobRecord:
        return self._jobs.wait_sync(job_id, timeout)

    async def cancel(self, job_id: uuid.UUID) -> bool:
        return await self._jobs.cancel(job_id)

    def cancel_sync(self, job_id: uuid.UUID) -> bool:
        return self._jobs.cancel_sync(job_id)

    async def requeue(self, job_id: uuid.UUID) -> bool:
        return await self._jobs.requeue(job_id)

    def requeue_sync(self, job_id: uuid.UUID) -> bool:
        return self._jobs.requeue_sync(job_id)

    async def claim(self, worker_id: str, limit: int, start: int | None = None) -> list[JobRecord]:
        return await self._jobs.claim(worker_id, limit, start)

    async def write_back(self, worker_id: str, transitions: Sequence[Transition]) -> None:
        await self._jobs.write_back(worker_id, transitions)

    async def write_back_and_claim(self, worker_id: str, transitions: Sequence[Transition],
                                   limit: int, start: int | None = None) -> list[JobRecord]:
        return await self._jobs.write_back_and_claim(worker_id, transitions, limit, start)

    async def release_unknown(self, worker_id: str, owned: Collection[uuid.UUID], *,
                              previous_life: bool = False) -> list[uuid.UUID]:
        return await self._jobs.release_unknown(worker_id, owned, previous_life=previous_life)

    async def gate(self, worker_id: str, records: Sequence[JobRecord], limits: Mapping[str, RateLimit]) -> Verdict:
        """Counted in the database, so the limit holds across every worker."""
        return await self._jobs.gate(worker_id, records, limits)
