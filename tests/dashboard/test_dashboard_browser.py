"""The UI in a real headless browser (Debian's chromium driven by Playwright): log in, see
a failed job's traceback, retry it and watch it succeed; pause a queue and see work stop.

Skipped, saying why, only when chromium or Playwright is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import AsyncIterator

import pytest

from chancy import Job
from chancy.dashboard.app import create_app
from chancy.testing import running_worker

from tests.dashboard import dashboard_tasks as tasks
from tests.dashboard.conftest import PASSWORD, USERS

CHROMIUM = os.environ.get("CHANCY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
TIMEOUT_MS = 15_000


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[str]:
    """The dashboard on a free localhost port, in this event loop."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(app, USERS, refresh_seconds=0.3), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


async def log_in(page, base: str, user: str = "olga") -> None:
    await page.goto(base + "/jobs")
    assert "/login" in page.url  # nothing is shown before logging in
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/jobs")


async def test_log_in_see_traceback_retry_and_watch_it_succeed(app):
    ref = await app.push(tasks.fails_until_repaired, "valve-3")
    async with running_worker(app), serving(app) as base, browser_page() as page:
        await ref.wait(timeout=10)
        await log_in(page, base)
        await page.goto(base + "/jobs?state=failed")
        await page.click(f"tr[data-job='{ref.id}'] a")
        await page.wait_for_url(f"{base}/jobs/{ref.id}")
        traceback = await page.inner_text("pre.traceback")
        assert "RuntimeError: valve-3 is broken" in traceback and "fails_until_repaired" in traceback
        assert await page.inner_text("h1 .state") == "failed"

        tasks.REPAIRED.add("valve-3")
        await page.click("form[action$='/retry'] button")
        await page.wait_for_selector("p.notice-ok")
        # The page updates itself (no reload) until the job has succeeded.
        await page.wait_for_selector("h1 .state-succeeded")
        assert "valve-3 fixed" in await page.inner_text("#result")
        assert await page.inner_text("h1 .state") == "succeeded"
    assert (await app.get_job(ref)).state.value == "succeeded"


async def test_pause_a_queue_and_see_work_stop(app):
    async with running_worker(app), serving(app) as base, browser_page() as page:
        await log_in(page, base)
        await page.goto(base + "/queues")
        await page.click("table.queue-actions tr[data-queue='default'] form[action$='/queues/pause'] button")
        await page.wait_for_selector("table.queues tr[data-queue='default'] .state-paused")

        await page.evaluate("window.sameDocument = true")  # a reload or navigation would drop it
        held = await app.push(Job(tasks.add, args=(20, 22)))
        # A job on another queue runs through: the worker is alive and claiming.
        await (await app.push(Job(tasks.add, args=(1, 1), queue="emails"))).wait(timeout=10)
        with pytest.raises(TimeoutError):
            await held.wait(timeout=1.0)
        await page.wait_for_selector("table.queues tr[data-queue='default'] td.count-pending:text-is('1')")
        assert await page.inner_text("table.queues tr[data-queue='default'] td.count-running") == "0"
        assert await page.evaluate("window.sameDocument === true")  # the page updated itself

        await page.click("table.queue-actions tr[data-queue='default'] form[action$='/queues/resume'] button")
        await page.wait_for_selector("table.queues tr[data-queue='default'] .state-active")
        assert (await held.wait(timeout=10)).result == 42
        await page.wait_for_selector("table.queues tr[data-queue='default'] td.count-pending:text-is('0')")
