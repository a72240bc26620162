"""Reading jobs by a filter in Postgres (:class:`chancy.store.queries.JobQueries`): the
admin statements' ``list_jobs``, run through the app's store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chancy.job import JobRecord
from chancy.store.admin import JobSelection

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore


class PgJobQueries:
    """``app.store.queries``."""

    def __init__(self, store: "PgStore") -> None:
        self._store = store

    async def list_jobs(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        return await self._store.run(self._store.admin.list_jobs(selection, limit))

    def list_jobs_sync(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        return self._store.run_sync(self._store.admin.list_jobs(selection, limit))
