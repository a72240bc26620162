"""Reading what the interop tests' tasks and rows left behind."""

from __future__ import annotations

import psycopg


def ran(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT key, worker FROM interop_ran ORDER BY key").fetchall()


def job_rows(dsn: str, where: str = "TRUE") -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT id, state, attempts, taken_by, result FROM chancy_jobs WHERE {where}").fetchall()
