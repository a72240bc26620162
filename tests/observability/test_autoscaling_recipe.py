"""The KEDA recipe in docs/observability.md: its postgresql triggers' queries, as written
there, read a queue's depth (runnable jobs) and age (oldest runnable job) right."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

import psycopg

from chancy import Job

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "observability.md")


def _documented_queries() -> list[str]:
    with open(DOC, encoding="utf-8") as doc:
        return re.findall(r'^\s+query: "(SELECT .+)"$', doc.read(), re.M)


async def test_the_documented_keda_queries_read_depth_and_age(app):
    depth_sql, age_sql = _documented_queries()
    now = datetime.now(timezone.utc)
    await app.push_many([Job("proj.t", queue="default"), Job("proj.t", queue="default"),
                         Job("proj.t", queue="default", scheduled_at=now - timedelta(minutes=5)),  # due
                         Job("proj.t", queue="default", scheduled_at=now + timedelta(hours=1)),  # not yet
                         Job("proj.t", queue="other", scheduled_at=now - timedelta(hours=2))])
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        depth, = conn.execute(depth_sql).fetchone()
        age, = conn.execute(age_sql).fetchone()
        conn.execute("DELETE FROM chancy_jobs WHERE queue = 'default'")
        empty_depth, = conn.execute(depth_sql).fetchone()
        empty_age, = conn.execute(age_sql).fetchone()
    assert (depth, empty_depth, empty_age) == (3, 0, 0)
    assert 300 <= age < 400
