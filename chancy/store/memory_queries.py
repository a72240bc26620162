"""Reading jobs by a filter in an app's in-memory queues
(:class:`chancy.store.queries.JobQueries`), by the rule of ``list_jobs`` in
``sql/admin.sql``, kept here once."""

from __future__ import annotations

import heapq
import json
from typing import Any

from chancy import serialization
from chancy.job import JobRecord
from chancy.store.admin import JobSelection
from chancy.store.memory import queues_of


def _json_text(value: Any) -> str:
    """A stored value as Postgres prints jsonb (``", "`` and ``": "`` separators; the
    order of an object's keys may differ from Postgres', which sorts them)."""
    return json.dumps(json.loads(serialization.dumps(value)), ensure_ascii=False)


def matches(record: JobRecord, selection: JobSelection) -> bool:
    """Whether ``record`` is one of the jobs ``selection`` covers."""
    if selection.states and record.state not in selection.states:
        return False
    if selection.queues and record.queue not in selection.queues:
        return False
    if selection.task is not None and record.func != selection.task:
        return False
    if selection.task_contains and selection.task_contains.lower() not in record.func.lower():
        return False
    if selection.since is not None and record.created_at < selection.since:
        return False
    if selection.until is not None and record.created_at >= selection.until:
        return False
    if selection.ids and record.id not in selection.ids:
        return False
    if selection.text:
        arguments = _json_text(list(record.args)) + " " + _json_text(record.kwargs)
        return selection.text.lower() in arguments.lower()
    return True


class MemoryJobQueries:
    """The job queries of an app's current in-memory store."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def list_jobs_sync(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        chosen = [record for queue in queues_of(self._app) for record in queue.records() if matches(record, selection)]
        return heapq.nlargest(limit, chosen, key=lambda record: record.id)

    async def list_jobs(self, selection: JobSelection, limit: int) -> list[JobRecord]:
        return self.list_jobs_sync(selection, limit)
