"""The operator statements (chancy/store/pg/sql/admin.sql): cheap on a big table of
finished jobs, and their shared parts kept identical."""

from __future__ import annotations

import re

import psycopg

from chancy import Chancy
from chancy.migrations import Names
from chancy.store.admin import BulkAction, JobSelection
from chancy.store.pg.admin import AdminStatements, in_sequence, selection_params
from chancy.store.pg.jobs import RECORD_COLUMNS
from chancy.store.pg.statements import SQL_DIR, SqlFile

SELECTION = re.compile(r"-- selection\n(.*?)-- end of selection", re.DOTALL)


async def test_status_counts_never_scan_old_finished_rows(dsn):
    app = Chancy(dsn)
    await app.migrate()
    await app.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chancy_jobs (id, queue, func, state, completed_at) "
            "SELECT gen_random_uuid(), 'q' || (i % 3), 'f', CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, "
            "now() - interval '30 days' - i * interval '1 second' FROM generate_series(1, 60000) i")
        conn.execute("INSERT INTO chancy_jobs (id, queue, func) SELECT gen_random_uuid(), 'q1', 'f' "
                     "FROM generate_series(1, 50)")
        conn.execute("ANALYZE chancy_jobs")
        statement = next(app.store.admin.counts(86400.0))
        plan = "\n".join(row[0] for row in conn.execute(b"EXPLAIN " + statement.query, statement.params).fetchall())
        assert "Seq Scan" not in plan, plan
        counted = statement.mapper(conn.execute(statement.query, statement.params).fetchall())
        assert counted == {"q1": {"pending": 50}}  # the month-old rows are outside the window
        everything = next(app.store.admin.counts(None))
        totals = everything.mapper(conn.execute(everything.query, everything.params).fetchall())
        assert sum(totals["q0"].values()) == 20000 and totals["q1"]["pending"] == 50


def test_every_copy_of_the_job_selection_is_the_same():
    """The CLI's listing and bulk actions and the dashboard's job list filter alike."""
    copies = {}
    for file_name in ("admin.sql", "dashboard.sql"):
        for name in SqlFile(file_name, {}).names():
            found = SELECTION.findall(SqlFile(file_name, {}).template(name))
            if found:
                copies[f"{file_name}:{name}"] = " ".join(found[0].split())
    assert set(copies) == {"admin.sql:list_jobs", "admin.sql:bulk_count", "admin.sql:bulk_retry",
                           "admin.sql:bulk_cancel", "admin.sql:bulk_delete", "dashboard.sql:list_jobs"}
    assert len(set(copies.values())) == 1, copies
    params = set(re.findall(r"%\((\w+)\)s", next(iter(copies.values()))))
    assert params == set(selection_params(JobSelection(), None))


def test_whole_job_statements_read_the_columns_records_are_mapped_from():
    text = (SQL_DIR / "admin.sql").read_text()
    for name in ("list_jobs", "running", "scheduled"):
        statement = SqlFile("admin.sql", {}).template(name)
        columns = " ".join(statement[statement.index("SELECT") + len("SELECT"):statement.index("FROM")].split())
        assert columns == " ".join(RECORD_COLUMNS.split()), name
    assert text.count("-- name: ") == len(SqlFile("admin.sql", {}).names())


def test_selection_parameters():
    selection = JobSelection(queues=("a",), task_contains="50%_off", text="x\\y")
    params = selection_params(selection, selection.states_for(BulkAction.RETRY))
    assert params["states"] == ["cancelled", "expired", "failed"]
    assert params["task_like"] == "%50\\%\\_off%" and params["text"] == "%x\\\\y%"
    assert params["queues"] == ["a"] and params["ids"] is None and params["task"] is None
    assert selection_params(JobSelection(), None)["states"] is None  # the dashboard's list: any state


def test_psql_hints_name_the_prefixed_table_plainly():
    counts, failed = AdminStatements(Names("app_")).peek_statements()
    assert counts == "SELECT queue, state, count(*), avg(attempts) FROM app_jobs GROUP BY 1, 2 ORDER BY 1, 2"
    assert failed == "SELECT id, func, attempts, errors->-1->>'message' FROM app_jobs WHERE state = 'failed' LIMIT 5"


def _drive(operation, answers):
    """Run an operation against canned rows, one list per statement; the statements sent."""
    sent, answers = [], iter(answers)
    try:
        statement = next(operation)
        while True:
            sent.append(statement)
            statement = operation.send(statement.mapper(next(answers)))
    except StopIteration as stop:
        return sent, stop.value


def test_operations_in_sequence_give_each_result_in_order():
    admin = AdminStatements(Names("chancy_"))
    operations = in_sequence(admin.states_of([]), admin.table_health())
    sent, (states, health) = _drive(operations, [[("failed", 2)], [(10, 1, None, None)]])
    assert [s.query for s in sent] == [SqlFile("admin.sql", Names("chancy_").fields())[n]
                                       for n in ("states_of", "table_health")]
    assert states == {"failed": 2} and health.live_rows == 10 and health.dead_rows == 1


def test_a_statement_timeout_is_set_first_then_the_operation_runs():
    admin = AdminStatements(Names("chancy_"))
    sent, result = _drive(admin.with_statement_timeout(500, admin.states_of([])), [[], [("pending", 1)]])
    assert sent[0].params == {"timeout": "500ms"} and b"statement_timeout" in sent[0].query
    assert result == {"pending": 1}
