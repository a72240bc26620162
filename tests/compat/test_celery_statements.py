"""The Celery layer's statements, as the store holds them (``chancy/store/pg/sql/celery_*.sql``):
each composes for a prefix, each builder sends every parameter its statement names, and
the transport's two ways of storing a message write the very same row."""

from __future__ import annotations

import re
import uuid

import pytest

from chancy.job import Job, JobRecord, JobState
from chancy.migrations import Names
from chancy.store.pg.celery_canvas import PARKED_AT, CanvasSQL
from chancy.store.pg.celery_chords import ChordSQL
from chancy.store.pg.celery_results import ResultSQL
from chancy.store.pg.celery_transient import QueueLifetime, TransientSQL
from chancy.store.pg.celery_transport import Ack, TransportSQL
from chancy.store.pg.statements import SqlFile, Statement

NAMES = Names("chancy_")
FILES = ["celery_transport.sql", "celery_transient.sql", "celery_chords.sql", "celery_results.sql",
         "celery_canvas.sql", "celery_connection.sql"]
PLACEHOLDER = re.compile(rb"%\((\w+)\)[sb]")


@pytest.mark.parametrize("file_name", FILES)
def test_every_statement_composes_for_a_prefix(file_name):
    statements = SqlFile(file_name, NAMES.fields())
    assert statements.names()
    for name in statements.names():
        if name == "listen":  # names its channel: composed per channel
            continue
        assert isinstance(statements[name], bytes)  # a table it names that Names lacks: KeyError


def _record() -> JobRecord:
    return JobRecord.from_fields(
        id=uuid.uuid4(), queue="celery", func="proj.add", args=(), kwargs={}, priority=0, state=JobState.RUNNING,
        attempts=1, max_attempts=1, scheduled_at=None, expires_at=None, created_at=None, started_at=None,
        completed_at=None, taken_by="worker-1", unique_key=None, limits=(), backoff=None, meta={}, result=None,
        errors=[])


def _statements() -> list[Statement]:
    transport, transient = TransportSQL(NAMES), TransientSQL(NAMES)
    chords, results, canvas = ChordSQL(NAMES), ResultSQL(NAMES), CanvasSQL(NAMES)
    job_id, ids = uuid.uuid4(), [str(uuid.uuid4())]
    job = Job("proj.add", args=[1], meta={"celery": {"task_id": "t-1", "parent_id": "p-1",
                                                     "replaced_task_nesting": 1}}).with_options(id=job_id)
    stored = transport.store(job, 1, None, uuid.uuid4())
    return [
        next(stored), next(transport.store(job.with_options(meta={}), 1, "bad message")),
        transport.ack("c", [Ack(job_id, 1, True)]), transport.release("c", [job_id]), transport.end_unrecorded(job_id, 1), transport.requeue(job_id, 1, "c"),
        transport.fail(job_id, 1, "c", {"type": "x"}), transport.release_undelivered("c", [job_id]),
        next(transport.purge("q")), transport.size("q"),
        transient.declare("q", QueueLifetime(1.0, None)), transient.bind("x", "k", None, "q"),
        transient.unbind("x", "k", "q"), transient.table("x"), transient.fanout("x", "{}", None),
        transient.put("q", "{}", 1.0), transient.take("q"), transient.size("q"), transient.purge("q"),
        transient.prune(),
        *chords.save_group("g", b"", None), chords.restore_group("g"), chords.delete_group("g"),
        chords.start_chord("g"), chords.set_size("g", 2), chords.add_to_chord("g"), chords.ensure_chord("g"),
        chords.part_return("g", "t", 0, b"", 2, "token", 30.0), chords.parts("g"), chords.fired("g", "token", 1.0),
        results.store_state(job_id, state=None, celery={}, result_json=None, error=None, func="f", queue="q",
                            args_json="[]", kwargs_json="{}", write="w"),
        results.finish_ignored(job_id, None), results.forget(job_id), results.set_state(job_id, "PROGRESS", {}),
        results.children("t"), results.group_members("g"), next(results.stamped(["pending"], {"k": ["v", 1]})),
        canvas.park_replaced(_record(), {"remaining": 1}), canvas.countdown(ids), canvas.release([uuid.uuid4()]),
        canvas.release_errbacks(ids, "t"), canvas.finish(ids, JobState.CANCELLED, None),
    ]


def test_every_builder_sends_the_parameters_its_statement_names():
    for statement in _statements():
        query = statement.query if isinstance(statement.query, bytes) else statement.query.as_bytes(None)
        wanted = {name.decode() for name in PLACEHOLDER.findall(query)}
        assert wanted <= set(statement.params), (query[:80], wanted - set(statement.params))


def test_the_transport_stores_a_new_message_and_a_reused_id_with_one_insert():
    """``store_new`` (every publish under a new id) is ``store`` (the id-reuse rules)
    without its ON CONFLICT rules: the row written is the same either way."""
    statements = SqlFile("celery_transport.sql", NAMES.fields())

    def insert(name: str) -> str:
        text = statements.template(name)
        return " ".join(text[text.index("INSERT INTO"):text.index("ON CONFLICT")].split())

    assert insert("store_new") == insert("store")


def test_a_message_row_sets_a_pushs_columns_then_the_transports_own():
    """One column list: the transport's INSERT names the columns a push sets, in the
    push's order, and fills them from the push's own values of the job."""
    from chancy.store.pg.jobs import PUSHED

    text = SqlFile("celery_transport.sql", NAMES.fields()).template("store_new")
    listed = text[text.index("AS j (") + len("AS j ("):text.index(")", text.index("AS j ("))]
    columns = [column.strip() for column in listed.split(",")]
    pushed = [column for column, _, _ in PUSHED]
    assert columns == pushed + ["state", "attempts", "errors", "completed_at"]
    job = Job("proj.add", args=[1], kwargs={"b": 2}, priority=3, meta={"celery": {"task_id": "t-1"}}).with_options(
        id=uuid.uuid4())
    params = next(TransportSQL(NAMES).store(job, 2, None)).params
    assert {c: params[c] for c in pushed} == {"id": job.id, "queue": job.queue, "func": "proj.add", "args": "[1]",
                                             "kwargs": '{"b": 2}', "priority": 3, "max_attempts": job.max_attempts,
                                             "scheduled_at": None, "expires_at": None, "unique_key": None,
                                             "limits": "[]", "backoff": None, "meta": '{"celery": {"task_id": "t-1"}}',
                                             "concurrency_key": None, "concurrency": None}
    assert params["attempts"] == 2


def test_rows_parked_by_the_transport_and_the_backend_use_the_canvas_parking_time():
    transport = TransportSQL(NAMES)
    job = Job("proj.add", meta={"celery": {"task_id": "t-1", "replaced_task_nesting": 1}}).with_options(id=uuid.uuid4())
    assert next(transport.store(job, 1, None)).params["parked_at"] == PARKED_AT
    stored = ResultSQL(NAMES).store_state(uuid.uuid4(), state=None, celery={}, result_json=None, error=None, func="f",
                                          queue="q", args_json="[]", kwargs_json="{}", write="w")
    assert stored.params["parked_at"] == PARKED_AT


def test_a_result_is_forgotten_by_one_statement():
    """The result backend and ``AsyncResult.forget()`` delete a finished row alike."""
    forgets = [name for file_name in FILES for name in SqlFile(file_name, NAMES.fields()).names() if "forget" in name]
    assert forgets == ["forget"]


def test_the_transport_purges_a_queue_with_the_operators_purge():
    """``celery purge`` / ``app.control.purge()`` through the transport deletes what
    ``chancy jobs purge`` deletes for that queue: the waiting rows, with one statement."""
    purge = TransportSQL(NAMES).purge("emails")
    statement = next(purge)
    assert statement.query == SqlFile("admin.sql", NAMES.fields())["purge"]
    assert statement.params == {"states": ["pending", "scheduled", "retrying"], "queues": ["emails"]}
    with pytest.raises(StopIteration) as done:
        purge.send(statement.mapper([("emails", 3)]))
    assert done.value.value == 3
