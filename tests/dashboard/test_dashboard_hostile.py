"""Hostile input on every route: NUL bytes, overlong text, ids that are not UUIDs, bad
times and bad numbers each get a 400 that says what is wrong (or a 404), never a 500;
and a canvas whose stored links are not job ids still shows."""

from __future__ import annotations

import uuid

import httpx
import pytest

from chancy import Job
from chancy.dashboard.app import create_app

from tests.dashboard import dashboard_tasks as tasks
from tests.dashboard.conftest import BASE, USERS, login

NUL = "a\x00b"
LONG = "x" * 5000
TEXT_VALUES = [NUL, "\x00", LONG, "%ED%A0%80", "'; DROP TABLE chancy_jobs; --"]
TIME_VALUES = ["2026-13-45", "yesterday", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
               "2026-01-01T00:00:00+99:00", NUL]
NUMBER_VALUES = ["0", "-1", "nan", "inf", "-inf", "1e999", "12abc", "1.5", str(2**70), "9" * 5000, NUL, LONG]
JOB_IDS = ["not-a-uuid", "%00", "a%00b", LONG, "00000000-0000-0000-0000-00000000000g", str(uuid.uuid4())]
JSON_VALUES = [NUL, LONG, "", None, True, [1], {"a": 1}, -1, 0, 1e308, 2**70, 10**400, "nan", "inf", "1e999"]
LIST_PARAMS = {"state": TEXT_VALUES + ["running,bogus"], "queue": TEXT_VALUES, "task": TEXT_VALUES,
               "q": TEXT_VALUES, "since": TIME_VALUES, "until": TIME_VALUES, "limit": NUMBER_VALUES,
               "older": TEXT_VALUES + ["2026-01-01T00:00:00|not-a-uuid", f"{'9' * 30}|{uuid.uuid4()}"],
               "newer": [NUL, "x|y"]}
QUEUE_ACTIONS = {"pause": ["queue", "seconds"], "resume": ["queue"], "concurrency": ["queue", "concurrency"],
                 "rate_limit": ["queue", "limit", "per"]}


@pytest.fixture
async def client(dashboard):
    """An operator whose requests show a server error as a 500 answer (not a raised error)."""
    transport = httpx.ASGITransport(app=dashboard, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        client.headers["x-csrf-token"] = await login(client, "olga")
        yield client


def refused(response: httpx.Response, *allowed: int) -> bool:
    """A 400 with an error message that says something (or one of the ``allowed`` codes)."""
    if response.status_code in allowed:
        return True
    if response.status_code != 400:
        return False
    if response.headers.get("content-type", "").startswith("application/json"):
        return len(response.json()["error"]) > 10
    return "error" in response.text.lower() or len(response.text) > 10


async def test_job_list_filters_refuse_hostile_values(client):
    for name, values in LIST_PARAMS.items():
        for value in values:
            for path in ("/api/jobs", "/jobs"):
                response = await client.get(path, params={name: value})
                assert response.status_code != 500, (path, name, value[:40])
                assert response.status_code == 200 or refused(response), (path, name, value[:40], response.text[:200])
    nul = await client.get("/api/jobs", params={"queue": NUL})
    assert nul.status_code == 400 and "NUL" in nul.json()["error"] and "queue" in nul.json()["error"]
    assert (await client.get("/api/jobs", params={"task": LONG})).status_code == 400


async def test_job_routes_refuse_ids_that_are_not_job_ids(client):
    for job_id in JOB_IDS:
        expected = 404 if len(job_id) == 36 and job_id[-1] != "g" else 400
        for path in (f"/api/jobs/{job_id}", f"/jobs/{job_id}", f"/api/canvas/{job_id}", f"/canvas/{job_id}"):
            response = await client.get(path)
            assert response.status_code == expected, (path, response.status_code, response.text[:200])
        for action in ("retry", "cancel", "delete"):
            response = await client.post(f"/api/jobs/{job_id}/{action}")
            assert response.status_code == expected, (action, job_id[:40], response.text[:200])
            form = await client.post(f"/jobs/{job_id}/{action}", data={"next": "/jobs"})
            assert form.status_code == 303, (action, job_id[:40], form.status_code)


async def test_queue_actions_refuse_hostile_values(client):
    for action, fields in QUEUE_ACTIONS.items():
        for field in fields:
            for value in JSON_VALUES:
                body = {"queue": "default", field: value}
                response = await client.post(f"/api/queues/{action}", json=body)
                assert response.status_code in (200, 400), (action, body, response.status_code, response.text[:200])
                if response.status_code == 400:
                    assert len(response.json()["error"]) > 10
                form = await client.post(f"/queues/{action}", data={k: str(v) for k, v in body.items()})
                assert form.status_code == 303, (action, field, str(value)[:40], form.status_code)
    nul = await client.post("/api/queues/pause", json={"queue": NUL})
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]
    huge = await client.post("/api/queues/concurrency", json={"queue": "default", "concurrency": 2**70})
    assert huge.status_code == 400 and "concurrency" in huge.json()["error"]
    forever = await client.post("/api/queues/pause", json={"queue": "default", "seconds": 1e308})
    assert forever.status_code == 400 and "seconds" in forever.json()["error"]


async def test_logins_and_other_routes_refuse_hostile_values(client, anonymous):
    for value in [NUL, LONG, None, [1], {"a": 1}]:
        response = await anonymous.post("/api/login", json={"username": value, "password": value})
        assert response.status_code in (400, 401), (value, response.status_code)
    for path in ("/", "/queues", "/workers", "/schedules", "/metrics", "/api/overview", "/api/queues",
                 "/api/workers", "/api/schedules", "/api/session", "/login"):
        for value in (NUL, LONG):
            response = await client.get(path, params={"next": value, "x": value})
            assert response.status_code == 200, (path, response.status_code)
    assert (await anonymous.get("/login", params={"next": NUL})).status_code == 200


@pytest.mark.parametrize("canvas", [
    {"after": ["not-a-uuid"]},
    {"then": ["a\\u0000b", 42, None, {"id": "x"}]},
    {"after": "not-a-list", "downstream": {"an": "object"}},
    {"dropped": [str(uuid.uuid4())]},  # a well-formed id of a job that is gone
    "not-an-object",
    ["a", "list"],
])
async def test_a_canvas_whose_links_are_not_job_ids_still_shows(app, canvas):
    ref = await app.push(Job(tasks.add, args=(1, 2), meta={"canvas": canvas, "celery": {"group": "not-a-uuid",
                                                                                        "parent_id": "\x01x",
                                                                                        "root_id": 7}}))
    dashboard = create_app(app, USERS, refresh_seconds=0)
    transport = httpx.ASGITransport(app=dashboard, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as viewer:
        await login(viewer, "vera")
        api = await viewer.get(f"/api/canvas/{ref.id}")
        assert api.status_code == 200, api.text[:300]
        assert [[j["id"] for j in step["jobs"]] for step in api.json()["steps"]] == [[str(ref.id)]]
        assert (await viewer.get(f"/canvas/{ref.id}")).status_code == 200
        assert (await viewer.get(f"/jobs/{ref.id}")).status_code == 200
