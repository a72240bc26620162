"""The JSON API over HTTP against a real Postgres: reading queues, jobs and workers, and
the operator actions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chancy import Job
from chancy.plugins.leadership import current_leader
from chancy.plugins.queues import QueueAdmin
from chancy.testing import eventually, running_worker

from tests.dashboard import dashboard_tasks as tasks


async def test_failed_job_shows_traceback_and_retry_makes_it_succeed(app, operator):
    ref = await app.push(tasks.fails_until_repaired, "pump-7")
    async with running_worker(app):
        await ref.wait(timeout=10)
        job = (await operator.get(f"/api/jobs/{ref.id}")).json()
        assert job["state"] == "failed" and job["can_retry"] and not job["can_cancel"]
        assert "RuntimeError: pump-7 is broken" in job["errors"][0]["traceback"]
        assert job["args"] == ["pump-7"] and job["timings"]["ran_seconds"] >= 0

        tasks.REPAIRED.add("pump-7")
        answer = await operator.post(f"/api/jobs/{ref.id}/retry")
        assert answer.status_code == 200, answer.text
        record = await ref.wait(timeout=10)
    assert record.state.value == "succeeded" and record.result == "pump-7 fixed"
    job = (await operator.get(f"/api/jobs/{ref.id}")).json()
    assert job["attempts"] == 2 and len(job["errors"]) == 1 and job["result"] == "pump-7 fixed"


async def test_actions_refuse_what_the_state_does_not_allow(app, operator):
    ref = await app.push(Job(tasks.add, args=(1, 2)))
    conflict = await operator.post(f"/api/jobs/{ref.id}/retry")
    assert conflict.status_code == 409 and "pending" in conflict.json()["error"]
    assert (await operator.post(f"/api/jobs/{ref.id}/cancel")).status_code == 200
    assert (await app.get_job(ref)).state.value == "cancelled"
    again = await operator.post(f"/api/jobs/{ref.id}/cancel")
    assert again.status_code == 409
    assert (await operator.post(f"/api/jobs/{ref.id}/delete")).status_code == 200
    assert await app.get_job(ref) is None
    missing = await operator.post(f"/api/jobs/{ref.id}/delete")
    assert missing.status_code == 404
    assert (await operator.get("/api/jobs/not-a-uuid")).status_code == 400
    assert (await operator.post(f"/api/jobs/{ref.id}/explode")).status_code in (404, 405)


async def test_running_job_cannot_be_deleted(app, operator):
    ref = await app.push(tasks.sleep, 30)
    async with running_worker(app):
        await eventually(lambda: _state(app, ref, "running"), timeout=10)
        refused = await operator.post(f"/api/jobs/{ref.id}/delete")
        assert refused.status_code == 409 and "cancel it first" in refused.json()["error"]
        assert (await operator.post(f"/api/jobs/{ref.id}/cancel")).status_code == 200
        assert (await ref.wait(timeout=10)).state.value == "cancelled"


async def _state(app, ref, state):
    return (await app.get_job(ref)).state.value == state


async def test_job_list_filters_and_pages_consistently(app, operator):
    refs = [await app.push(Job(tasks.add, args=(i, 1000 + i), queue="default")) for i in range(7)]
    await app.push(Job(tasks.fail, args=("needle in args",), queue="emails"))
    page = (await operator.get("/api/jobs", params={"queue": "default", "limit": 3})).json()
    seen = [j["id"] for j in page["jobs"]]
    assert seen == [str(r.id) for r in reversed(refs[-3:])] and page["newer"] is None
    # A job pushed now does not shift the next page: the cursor is a position, not an offset.
    await app.push(Job(tasks.add, args=(99, 99)))
    while page["older"]:
        page = (await operator.get("/api/jobs", params={"queue": "default", "limit": 3,
                                                        "older": page["older"]})).json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == [str(r.id) for r in reversed(refs)]
    back = (await operator.get("/api/jobs", params={"queue": "default", "limit": 3, "newer": page["newer"]})).json()
    assert [j["id"] for j in back["jobs"]] == [str(r.id) for r in reversed(refs[1:4])]

    text = (await operator.get("/api/jobs", params={"q": "needle"})).json()["jobs"]
    assert [j["queue"] for j in text] == ["emails"]
    assert (await operator.get("/api/jobs", params={"q": "%"})).json()["jobs"] == []  # wildcards are literal
    by_task = (await operator.get("/api/jobs", params={"task": "dashboard_tasks.fail"})).json()["jobs"]
    assert len(by_task) == 1
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert (await operator.get("/api/jobs", params={"since": future})).json()["jobs"] == []
    pending = (await operator.get("/api/jobs", params={"state": "pending,scheduled"})).json()["jobs"]
    assert len(pending) == 9

    bad = await operator.get("/api/jobs", params={"state": "lost"})
    assert bad.status_code == 400 and "Unknown state 'lost'" in bad.json()["error"]
    assert (await operator.get("/api/jobs", params={"since": "yesterday"})).status_code == 400
    assert (await operator.get("/api/jobs", params={"limit": "100000"})).status_code == 400


async def test_queues_pause_resume_and_concurrency(app, operator):
    await app.push(tasks.add, 1, 2)
    queues = {q["name"]: q for q in (await operator.get("/api/queues")).json()["queues"]}
    assert queues["default"]["pending"] == 1 and queues["default"]["code_concurrency"] == 2
    assert queues["emails"]["paused"] is False

    assert (await operator.post("/api/queues/pause", json={"queue": "emails"})).status_code == 200
    assert (await operator.post("/api/queues/concurrency", json={"queue": "default", "concurrency": 1})).status_code == 200
    admin = QueueAdmin(app)
    assert (await admin.get("emails")).paused and (await admin.get("default")).concurrency == 1
    queues = {q["name"]: q for q in (await operator.get("/api/queues")).json()["queues"]}
    assert queues["emails"]["paused"] and queues["default"]["concurrency"] == 1
    assert (await operator.post("/api/queues/resume", json={"queue": "emails"})).status_code == 200
    assert not (await admin.get("emails")).paused
    timed = await operator.post("/api/queues/pause", json={"queue": "emails", "seconds": 120})
    assert timed.status_code == 200
    queues = {q["name"]: q for q in (await operator.get("/api/queues")).json()["queues"]}
    until = datetime.fromisoformat(queues["emails"]["paused_until"])
    assert timedelta(seconds=60) < until - datetime.now(timezone.utc) <= timedelta(seconds=120)
    for bad_seconds in (-5, "nan", "inf", "soon"):
        refused = await operator.post("/api/queues/pause", json={"queue": "emails", "seconds": bad_seconds})
        assert refused.status_code == 400, bad_seconds

    limited = await operator.post("/api/queues/rate_limit", json={"queue": "emails", "limit": 10, "per": 60})
    assert limited.status_code == 200 and "10 per 60s" in limited.json()["message"]
    assert ((await admin.get("emails")).rate_limit, (await admin.get("emails")).rate_period) == (10, 60.0)
    queues = {q["name"]: q for q in (await operator.get("/api/queues")).json()["queues"]}
    assert (queues["emails"]["rate_limit"], queues["emails"]["rate_period"]) == (10, 60.0)
    assert (await operator.post("/api/queues/rate_limit", json={"queue": "emails", "limit": ""})).status_code == 200
    assert (await admin.get("emails")).rate_limit is None
    assert (await operator.post("/api/queues/rate_limit", json={"queue": "emails", "limit": 0})).status_code == 400

    bad = await operator.post("/api/queues/concurrency", json={"queue": "default", "concurrency": "lots"})
    assert bad.status_code == 400 and "whole number" in bad.json()["error"]
    assert (await operator.post("/api/queues/pause", json={"queue": ""})).status_code == 400


async def test_overview_workers_and_leader(app, operator):
    ok = await app.push(tasks.add, 2, 2)
    bad = await app.push(tasks.fail)
    async with running_worker(app) as worker:
        await ok.wait(timeout=10)
        await bad.wait(timeout=10)
        await eventually(lambda: current_leader(app), timeout=10, message="a leader elected")
        overview = (await operator.get("/api/overview")).json()
        workers = (await operator.get("/api/workers")).json()["workers"]
    assert overview["finished"] == 2 and overview["failed"] == 1 and overview["failure_rate"] == 0.5
    assert overview["workers_alive"] == 1 and overview["leader"] == worker.worker_id
    assert sum(p["succeeded"] for p in overview["throughput"]) == 1
    assert sum(p["failed"] for p in overview["throughput"]) == 1
    assert len(overview["throughput"]) == 60
    [row] = workers
    assert row["worker_id"] == worker.worker_id and row["alive"] and row["heartbeat_age"] < 30 and row["leader"]
    assert set(row["queues"]) >= {"default", "emails"}


async def test_paging_through_jobs_created_in_one_statement(app, operator):
    refs = await app.push_many([Job(tasks.add, args=(i, i), queue="emails") for i in range(5)])
    seen, page = [], {"older": ""}
    while page["older"] is not None:
        params = {"queue": "emails", "limit": 2, **({"older": page["older"]} if page["older"] else {})}
        page = (await operator.get("/api/jobs", params=params)).json()
        seen += [j["id"] for j in page["jobs"]]
    assert sorted(seen) == sorted(str(r.id) for r in refs) and len(seen) == 5
