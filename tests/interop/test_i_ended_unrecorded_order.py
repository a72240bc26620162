"""The two halves that finish the row of a task that stored no state (``Ignore``,
``Reject``) — the note from the process that ran it and the delivery's ack — arrive in
either order (a prefork child may note before its parent's early ack is written; an
acks_late ack comes after): the row is finished by whichever comes second, never by one
alone, and a note belongs to its own delivery only (a requeued row runs again)."""

from __future__ import annotations

import pytest

from chancy import Chancy
from chancy.job import Job, JobRecord
from chancy.migrations import Names
from chancy.queues.pg import Queue
from chancy.store.pg.celery_connection import ProcessConnection
from chancy.store.pg.celery_transport import Ack, TransportSQL
from chancy.store.pg.jobs import JobSQL, claim_steps
from chancy.store.pg.statements import single

CONSUMER = "celery:host:1:abcd"


@pytest.fixture
async def rows(interop_dsn):
    app = Chancy(interop_dsn, plugins=[Queue("celery")])
    database = ProcessConnection(interop_dsn)
    names = Names("chancy_")
    job_sql, transport_sql = JobSQL(names), TransportSQL(names)

    async def claimed() -> JobRecord:
        await app.push(Job("interop.add", args=[1, 2], queue="celery"))
        return database.run(claim_steps(job_sql, "celery", CONSUMER, 1))[0]

    def state(record: JobRecord) -> tuple[str, bool]:
        row = database.run(single(job_sql.get(record.id)))
        return row.state.value, bool((row.meta.get("celery") or {}).get("result_ignored"))

    def run(statement) -> bool:
        return database.run(single(statement))

    yield claimed, state, run, transport_sql
    await app.close()
    database.close()


async def test_noted_then_acked_finishes_at_the_ack(rows):
    claimed, state, run, sql = rows
    record = await claimed()
    assert run(sql.end_unrecorded(record.id, record.attempts))
    assert state(record) == ("running", False)  # not acknowledged yet (acks_late)
    assert run(sql.ack(CONSUMER, [Ack(record.id, record.attempts, finish=False)]))
    assert state(record) == ("succeeded", True)


async def test_acked_then_noted_finishes_at_the_note(rows):
    claimed, state, run, sql = rows
    record = await claimed()
    assert run(sql.ack(CONSUMER, [Ack(record.id, record.attempts, finish=False)]))
    assert state(record) == ("running", False)  # early ack: the task has not ended
    assert run(sql.end_unrecorded(record.id, record.attempts))
    assert state(record) == ("succeeded", True)
    assert not run(sql.end_unrecorded(record.id, record.attempts))  # sent again: nothing to do


async def test_a_note_belongs_to_its_delivery(rows):
    claimed, state, run, sql = rows
    record = await claimed()
    assert not run(sql.end_unrecorded(record.id, record.attempts + 1))  # no such delivery
    assert run(sql.end_unrecorded(record.id, record.attempts))
    assert run(sql.requeue(record.id, record.attempts, CONSUMER))  # Reject(requeue=True), acks_late
    assert state(record) == ("pending", False)
    again = await claimed()
    assert again.id == record.id
    assert run(sql.ack(CONSUMER, [Ack(again.id, again.attempts, finish=False)]))
    assert state(record) == ("running", False)  # this delivery's task has not ended
