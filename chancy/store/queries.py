"""Reading jobs by a filter (:class:`~chancy.store.admin.JobSelection`), whatever holds
them: the Postgres table (``list_jobs`` in ``sql/admin.sql``) or an app's in-memory queues
(:class:`chancy.store.memory_queries.MemoryJobQueries`); what the test helpers
(:func:`chancy.testing.pushed_jobs`) read. The contract suite
(``tests/store/test_queries_contract.py``) runs the same tests on both. Reach an app's
with :func:`chancy.store.of_app.queries_of`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chancy.job import JobRecord
    from chancy.store.admin import JobSelection


class JobQueries(Protocol):
    async def list_jobs(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        """The newest ``limit`` jobs (by id: ids grow with time) matching every filter of
        ``selection``, newest first. ``text`` matches the arguments as JSON text (the
        positional ones, a space, the keyword ones), in any case; ``task_contains`` part
        of the task's name, in any case."""

    def list_jobs_sync(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        """:meth:`list_jobs`, for callers without an event loop."""
