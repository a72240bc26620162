"""`chancy status` shows what decides whether the jobs table stays fast: its dead rows, and
the oldest open transaction (which keeps vacuum from removing them) — issue 24."""

from __future__ import annotations

import json
import time

import psycopg


def _make_dead_rows(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE chancy_jobs SET (autovacuum_enabled = false)")
        conn.execute("INSERT INTO chancy_jobs (id, queue, func) "
                     "SELECT gen_random_uuid(), 'default', 'x.y' FROM generate_series(1, %s)", (n,))
        conn.execute("DELETE FROM chancy_jobs")
        conn.execute("SELECT pg_stat_force_next_flush()")
    # The statistics are flushed when that session goes idle; give it a moment.
    time.sleep(1.2)


def test_status_shows_dead_rows_and_the_oldest_open_transaction(migrated, dsn):
    _make_dead_rows(dsn, 500)
    with psycopg.connect(dsn) as holder:  # a transaction left open, as a stuck web request does
        holder.execute("SELECT txid_current()")
        time.sleep(1.1)
        done = migrated("status", "--json")
        assert done.code == 0, done.err
        table = done.json()["table"]
        assert table["dead_rows"] >= 500 and table["live_rows"] == 0
        assert table["oldest_transaction_seconds"] >= 1.0
        text = migrated("status")
        assert "jobs table: 0 live rows, " in text.out and "dead (100%)" in text.out, text.out
        assert "oldest open transaction: " in text.out and "oldest open transaction: none" not in text.out
    after = migrated("status", "--json").json()["table"]
    assert after["oldest_transaction_seconds"] is None  # the holder is gone
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM chancy_jobs")
        conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.2)
    vacuumed = migrated("status", "--json").json()["table"]
    assert vacuumed["dead_rows"] == 0 and vacuumed["since_vacuum_seconds"] is not None
