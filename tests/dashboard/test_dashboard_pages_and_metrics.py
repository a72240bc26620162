"""Server-rendered pages, the canvas and schedule views, and Prometheus metrics."""

from __future__ import annotations

import asyncio

import re
import uuid
from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from chancy import Job
from chancy.plugins.cron import Cron
from chancy.testing import running_worker

from tests.dashboard import dashboard_tasks as tasks

PARKED = datetime(9999, 12, 31, tzinfo=timezone.utc)


async def test_every_page_renders_with_data(app, viewer):
    ok = await app.push(tasks.add, 1, 2)
    bad = await app.push(tasks.fail, "kaput")
    async with running_worker(app):
        await ok.wait(timeout=10)
        await bad.wait(timeout=10)
        pages = {path: await viewer.get(path) for path in ["/", "/queues", "/jobs", "/workers", "/schedules",
                                                            f"/jobs/{bad.id}", "/jobs?state=failed"]}
    for path, response in pages.items():
        assert response.status_code == 200, (path, response.text[:500])
    assert "<svg" in pages["/"].text and 'class="bad"' in pages["/"].text
    assert "ValueError: kaput" in pages[f"/jobs/{bad.id}"].text
    assert str(bad.id) in pages["/jobs?state=failed"].text and str(ok.id) not in pages["/jobs?state=failed"].text
    assert "leader" in pages["/workers"].text or "worker" in pages["/workers"].text
    missing = await viewer.get(f"/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and "There is no job" in missing.text
    assert (await viewer.get("/jobs?state=nonsense")).status_code == 400


async def test_fragment_requests_return_only_the_live_region(app, viewer):
    await app.push(tasks.add, 1, 2)
    full = await viewer.get("/queues")
    part = await viewer.get("/queues", headers={"x-chancy-fragment": "1"})
    assert "<html" in full.text and "<html" not in part.text
    assert 'data-queue="default"' in part.text


async def test_canvas_shows_steps_in_order(app, viewer):
    a, b, c, h1, h2 = (uuid.uuid4() for _ in range(5))

    def parked(after, **more):
        return {"canvas": {"after": [str(x) for x in after], "remaining": len(after), **more}}

    await app.push_many([
        Job(tasks.add, args=(1, 1), id=a, meta={"canvas": {"then": [str(b)]}}),
        Job(tasks.add, args=(2,), id=b, scheduled_at=PARKED, meta=parked([a], then=[str(c)])),
        Job(tasks.add, args=(3,), id=c, scheduled_at=PARKED, meta=parked([b])),
    ])
    chain = (await viewer.get(f"/api/canvas/{c}")).json()
    assert [[j["id"] for j in s["jobs"]] for s in chain["steps"]] == [[str(a)], [str(b)], [str(c)]]
    assert chain["count"] == 3

    body = uuid.uuid4()
    await app.push_many([
        Job(tasks.add, args=(1, 1), id=h1, meta={"canvas": {"then": [str(body)]}}),
        Job(tasks.add, args=(1, 2), id=h2, meta={"canvas": {"then": [str(body)]}}),
        Job(tasks.add, args=(), id=body, scheduled_at=PARKED, meta=parked([h1, h2], join=True)),
    ])
    chord = (await viewer.get(f"/api/canvas/{h1}")).json()
    assert [sorted(j["id"] for j in s["jobs"]) for s in chord["steps"]] == [sorted([str(h1), str(h2)]), [str(body)]]
    page = await viewer.get(f"/canvas/{body}")
    assert page.status_code == 200 and "waiting on 2 job(s)" in page.text
    assert (await viewer.get(f"/api/canvas/{uuid.uuid4()}")).status_code == 404


async def test_schedules_show_next_firing(app, viewer):
    await Cron.schedule(app, "nightly-report", Job(tasks.add, args=(1, 2), queue="emails"), cron="0 3 * * *")
    await Cron.schedule(app, "heartbeat", Job(tasks.add, args=(0, 0)), every=30)
    rows = (await viewer.get("/api/schedules")).json()["schedules"]
    assert [r["name"] for r in rows] == ["heartbeat", "nightly-report"]
    assert rows[1]["cron"] == "0 3 * * *" and rows[1]["queue"] == "emails" and rows[1]["task"].endswith(".add")
    assert 0 < rows[0]["next_in_seconds"] <= 30
    assert 0 < rows[1]["next_in_seconds"] <= 24 * 3600
    nightly = [datetime.fromisoformat(t) for t in rows[1]["upcoming"]]
    assert len(nightly) == 3 and all(t.hour == 3 and t.minute == 0 for t in nightly)
    assert [b - a for a, b in zip(nightly, nightly[1:])] == [timedelta(days=1)] * 2
    every = [datetime.fromisoformat(t) for t in rows[0]["upcoming"]]
    assert [b - a for a, b in zip(every, every[1:])] == [timedelta(seconds=30)] * 2
    page = await viewer.get("/schedules")
    assert "nightly-report" in page.text and "0 3 * * *" in page.text


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, read by prometheus-client's own parser (so the text
    is valid exposition format), by name and labels."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _sample(text: str, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    samples = _samples(text)
    assert key in samples, f"{key} missing from:\n{text}"
    return samples[key]


async def test_prometheus_metrics(app, viewer):
    await app.push(Job(tasks.add, args=(1, 1), queue="emails"))
    first = await viewer.get("/metrics")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert _sample(first.text, "chancy_jobs", queue="emails", state="pending") == 1
    assert "# TYPE chancy_jobs_finished_total counter" in first.text
    refs = [await app.push(tasks.add, 1, 2), await app.push(tasks.fail), await app.push(tasks.add, 3, 4)]
    async with running_worker(app):
        for ref in refs:
            await ref.wait(timeout=10)
        text = (await viewer.get("/metrics")).text
        assert _sample(text, "chancy_workers") == 1
    assert _sample(text, "chancy_jobs_finished_total", queue="default", state="succeeded") == 2
    assert _sample(text, "chancy_jobs_finished_total", queue="default", state="failed") == 1
    assert _sample(text, "chancy_job_run_seconds_count", queue="default") == 3
    assert _sample(text, "chancy_job_run_seconds_bucket", queue="default", le="+Inf") == 3
    assert _sample(text, "chancy_job_run_seconds_bucket", queue="default", le="1800") == 3
    assert _sample(text, "chancy_job_wait_seconds_count", queue="default") == 3
    les = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300", "1800")
    buckets = [_sample(text, "chancy_job_run_seconds_bucket", queue="default", le=le) for le in les]
    assert buckets == sorted(buckets)  # cumulative, under the bucket labels they always had
    assert _sample(text, "chancy_queue_paused", queue="default") == 0
    again = (await viewer.get("/metrics")).text  # counted once, not again on the next scrape
    assert _sample(again, "chancy_jobs_finished_total", queue="default", state="succeeded") == 2


async def test_prometheus_metrics_show_the_jobs_tables_health(app, viewer, dsn):
    """Dead rows and the oldest open transaction (what keeps vacuum from removing them),
    to alert on before the jobs table slows down (issue 24)."""
    import psycopg

    assert _sample((await viewer.get("/metrics")).text, "chancy_oldest_transaction_seconds") == 0
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT txid_current()")
        await asyncio.sleep(1.1)
        text = (await viewer.get("/metrics")).text
    assert _sample(text, "chancy_oldest_transaction_seconds") >= 1.0
    assert _sample(text, "chancy_jobs_table_dead_rows") >= 0 and _sample(text, "chancy_jobs_table_live_rows") >= 0


async def test_prometheus_metrics_escape_hostile_queue_names(app, viewer):
    hostile = 'a"b\\c\nd{e}'
    await app.push(Job(tasks.add, args=(1, 1), queue=hostile))
    text = (await viewer.get("/metrics")).text
    assert _sample(text, "chancy_jobs", queue=hostile, state="pending") == 1


async def test_page_links_follow_the_filter_and_cursor(app, viewer):
    import html

    refs = [await app.push(Job(tasks.add, args=(i, i), queue="emails")) for i in range(3)]
    first = await viewer.get("/jobs", params={"queue": "emails", "limit": 2})
    older = html.unescape(re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1))
    second = await viewer.get(older)
    assert second.status_code == 200 and str(refs[0].id) in second.text and str(refs[2].id) not in second.text
    newer = html.unescape(re.search(r'<a rel="prev" href="([^"]+)"', second.text).group(1))
    back = await viewer.get(newer)
    assert str(refs[2].id) in back.text and str(refs[1].id) in back.text and str(refs[0].id) not in back.text
