"""The operator statements stay cheap on a big table of finished jobs."""

from __future__ import annotations

import psycopg

from chancy import Chancy
from chancy.queues.admin_sql import AdminSQL


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
        statement = AdminSQL(app.names).counts(86400.0)
        plan = "\n".join(row[0] for row in conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + statement.query, statement.params).fetchall())
        assert "Seq Scan" not in plan, plan
        counted = statement.mapper(conn.execute(statement.query, statement.params).fetchall())
        assert counted == {"q1": {"pending": 50}}  # the month-old rows are outside the window
        everything = AdminSQL(app.names).counts(None)
        totals = everything.mapper(conn.execute(everything.query, everything.params).fetchall())
        assert sum(totals["q0"].values()) == 20000 and totals["q1"]["pending"] == 50
