"""Bulk retry/cancel/delete on the dashboard: the JSON API (filters, ticked ids, dry runs,
the states each action may touch, bad input, the guard), and the job list's bulk
actions in headless Chromium (tick, confirm with the count, see the outcome)."""

from __future__ import annotations

import base64
import os

import psycopg
import pytest

from chancy import Job
from tests.dashboard.conftest import PASSWORD

TASK_A = "tests.dashboard.dashboard_tasks.add"
TASK_B = "tests.dashboard.dashboard_tasks.fails_until_repaired"


async def _seed(app) -> dict[str, list]:
    """Failed, running, pending and succeeded jobs of two tasks, states set as a worker leaves them."""
    groups = {
        "failed_a": [Job(TASK_A, args=[i, i]) for i in range(3)],
        "failed_b": [Job(TASK_B, args=["valve-9"])],
        "running_a": [Job(TASK_A, args=[7, 7])],
        "pending_a": [Job(TASK_A, args=[8, 8], queue="emails")],
        "succeeded_a": [Job(TASK_A, args=[9, 9])],
    }
    ids = {name: [ref.id for ref in await app.push_many(jobs)] for name, jobs in groups.items()}
    updates = {"failed_a": "failed", "failed_b": "failed", "running_a": "running", "succeeded_a": "succeeded"}
    async with app.store.connection() as conn:
        for name, state in updates.items():
            await conn.execute(
                "UPDATE chancy_jobs SET state = %s, attempts = 1, completed_at = CASE WHEN %s <> 'running' THEN now() END,"
                " taken_by = CASE WHEN %s = 'running' THEN 'elsewhere:1:x' END WHERE id = ANY(%s)",
                [state, state, state, ids[name]])
    return ids


async def _states(app) -> dict:
    async with app.store.connection() as conn:
        return {row[0]: row[1] for row in await (await conn.execute("SELECT id, state FROM chancy_jobs")).fetchall()}


async def test_bulk_by_filter_and_by_ids(app, operator):
    ids = await _seed(app)
    dry = await operator.post("/api/jobs/bulk/retry", json={"filter": {"state": "failed", "task": "add"},
                                                            "dry_run": True})
    assert dry.json() == {"ok": True, "action": "retry", "dry_run": True, "matched": 3,
                          "message": "3 job(s) would be retried"}, dry.text
    assert {(await _states(app))[i] for i in ids["failed_a"]} == {"failed"}

    done = await operator.post("/api/jobs/bulk/retry", json={"filter": {"state": ["failed", "expired"], "task": "add"}})
    assert done.json()["changed"] == 3, done.text
    states = await _states(app)
    assert {states[i] for i in ids["failed_a"]} == {"pending"} and states[ids["failed_b"][0]] == "failed"

    # Ticked ids: only those the action may touch change (a running job is never deleted).
    picked = [str(ids["succeeded_a"][0]), str(ids["running_a"][0]), str(ids["failed_b"][0])]
    deleted = await operator.post("/api/jobs/bulk/delete", json={"ids": picked})
    assert deleted.json()["changed"] == 2, deleted.text
    states = await _states(app)
    assert ids["succeeded_a"][0] not in states and states[ids["running_a"][0]] == "running"

    # Cancel, queue filter: the running job (told to stop) and the retried ones on "default".
    cancelled = await operator.post("/api/jobs/bulk/cancel", json={"filter": {"queue": "default"}})
    assert cancelled.json()["changed"] == 4, cancelled.text
    states = await _states(app)
    assert states[ids["running_a"][0]] == "cancelled" and states[ids["pending_a"][0]] == "pending"

    forced = await operator.post("/api/jobs/bulk/delete", json={"all": True, "force": True})
    assert forced.json()["changed"] == 5, forced.text  # 4 cancelled + the pending one
    assert await _states(app) == {}


@pytest.mark.parametrize("action, body, message", [
    ("explode", {"all": True}, "Unknown bulk action 'explode'"),
    ("retry", {"filter": {"state": "bogus"}}, "Unknown state 'bogus'"),
    ("retry", {"filter": {"state": "running"}}, "cannot retry running jobs"),
    ("delete", {"filter": {"state": "pending"}}, "cannot delete pending jobs"),
    ("retry", {}, "Acting on every job needs 'all' set"),
    ("retry", {"filter": "state=failed"}, "'filter' must be an object"),
    ("retry", {"filter": {"since": "yesterday"}}, "'since' must be an ISO 8601 time"),
    ("retry", {"ids": ["not-a-job"]}, "'not-a-job' is not a job id"),
    ("retry", {"ids": "x" * 20 and [str(i) for i in range(1001)]}, "At most 1000 jobs"),
    ("retry", {"ids": [1, 2]}, "'ids' must be a list of job ids"),
    ("retry", {"scope": "selected"}, "No jobs are selected"),
    ("retry", {"all": True, "dry_run": "perhaps"}, "'dry_run' must be true or false"),
    ("retry", {"filter": {"state": 3}}, "'state' must be a state name or a list of them"),
    ("retry", {"filter": {"state": ["failed", None]}}, "'state' must be a state name or a list of them"),
    ("retry", {"filter": {"queue": ["a"]}}, "'queue' must be text"),
    ("retry", {"filter": {"q": "x\u0000y"}}, "'q' must not contain NUL characters"),
    ("retry", {"scope": "everything", "all": True}, "'scope' must be 'selected'"),
])
async def test_bad_bulk_input_is_a_clear_400(app, operator, action, body, message):
    response = await operator.post(f"/api/jobs/bulk/{action}", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text


async def test_bulk_actions_are_guarded_like_the_other_actions(app, operator, viewer, anonymous):
    ids = await _seed(app)
    body = {"filter": {"state": "failed"}}
    assert (await viewer.post("/api/jobs/bulk/retry", json=body)).status_code == 403
    assert (await anonymous.post("/api/jobs/bulk/retry", json=body)).status_code == 401
    basic = base64.b64encode(f"olga:{PASSWORD}".encode()).decode()
    assert (await anonymous.post("/api/jobs/bulk/retry", json=body,
                                 headers={"authorization": f"Basic {basic}"})).status_code == 401
    no_token = await operator.post("/api/jobs/bulk/retry", json=body, headers={"x-csrf-token": "wrong"})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    cross_site = await operator.post("/api/jobs/bulk/retry", json=body, headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403
    # And the HTML form endpoints (the confirmation page, then the action) too.
    assert (await viewer.post("/jobs/bulk", data={"action": "retry", "scope": "matching", "state": "failed",
                                                  "csrf_token": viewer.headers["x-csrf-token"]})).status_code == 403
    assert {(await _states(app))[i] for i in ids["failed_a"]} == {"failed"}


# --- in a browser ---------------------------------------------------------------------------------
CHROMIUM = os.environ.get("CHANCY_TEST_CHROMIUM") or "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
async def test_tick_jobs_confirm_with_the_count_and_act_in_a_browser(app):
    pytest.importorskip("playwright.async_api", reason="Playwright is not installed (pip install playwright)")
    from tests.dashboard.test_dashboard_browser import browser_page, log_in, serving

    ids = await _seed(app)
    async with serving(app) as base, browser_page() as page:
        await log_in(page, base)
        await page.goto(base + "/jobs?state=failed")
        for job_id in ids["failed_a"][:2]:
            await page.check(f"tr[data-job='{job_id}'] input[name=ids]")
        await page.click("fieldset.bulk-actions button[value=retry]")
        await page.wait_for_url(base + "/jobs/bulk")
        assert await page.inner_text("h1") == "Retry 2 job(s)?"
        assert "2 of the 2 ticked job(s) can be retried" in await page.inner_text("p.bulk-summary")
        await page.click("button.confirm")
        await page.wait_for_selector("p.notice-ok")
        assert await page.inner_text("p.notice-ok") == "Retried 2 job(s)"
        assert page.url == base + "/jobs?state=failed"  # back on the filtered list
        states = await _states(app)
        assert [states[i] for i in ids["failed_a"]] == ["pending", "pending", "failed"]

        # Every job matching the filter, across pages: the header box ticks the page, the
        # scope picks all matching; the confirmation counts them.
        await page.goto(base + "/jobs?state=failed&limit=1")
        await page.check("input[data-select-all]")
        assert await page.is_checked(f"tr[data-job='{ids['failed_b'][0]}'] input[name=ids]")
        await page.check("input[name=scope][value=matching]")
        await page.click("fieldset.bulk-actions button[value=delete]")
        await page.wait_for_url(base + "/jobs/bulk")
        assert await page.inner_text("h1") == "Delete 2 job(s)?"
        await page.click("button.confirm")
        await page.wait_for_selector("p.notice-ok")
        assert await page.inner_text("p.notice-ok") == "Deleted 2 job(s)"
    states = await _states(app)
    assert ids["failed_b"][0] not in states and ids["failed_a"][2] not in states and len(states) == 5
