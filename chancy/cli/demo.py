"""``chancy demo``: the quickstart. Starts (or attaches to) Postgres, migrates, pushes a
realistic batch across two queues and priorities — some scheduled, some failing and
retrying — runs a worker with a live progress line, then prints what happened and how to
look at the rows yourself. Safe to run again: each run works on its own jobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import time
import uuid
from typing import Any, Sequence

import click
import psycopg

from chancy.app import Chancy
from chancy.cli.common import translated_errors
from chancy.cli.output import safe_dsn, table
from chancy.cli.progress import Progress
from chancy.job import FINISHED_STATES, JobState
from chancy.store.admin import JobSelection
from chancy.store.pg.admin import in_sequence
from chancy.testing import running_worker

#: Redraw the push progress line after this many calls.
PROGRESS_EVERY = 100
#: Threads pushing at once (the sync pool holds up to 10 connections).
PUSH_THREADS = 8
POLL_INTERVAL = 0.2
TEMPLATES = ("welcome", "receipt", "digest", "invoice")


@dataclasses.dataclass(frozen=True)
class Call:
    """One task call of the batch: ``task.apply_async(args, **options)``."""

    task: Any
    args: tuple
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def plan_calls(total: int) -> list[Call]:
    """Two emails for every report; urgent password resets jump the queue, reminders are
    scheduled a few seconds ahead, big accounts' reports get a higher priority."""
    from chancy.cli.demo_tasks import render_report, send_email

    calls = []
    for n in range(total):
        if n % 3 == 2:
            calls.append(Call(render_report, (n, 200 + n % 400), {"priority": 5} if n % 10 == 5 else {}))
        elif n % 20 == 0:
            calls.append(Call(send_email, (n, "password_reset"), {"priority": 9}))
        elif n % 25 == 1:
            calls.append(Call(send_email, (n, "reminder"), {"countdown": 1 + n % 3}))
        else:
            calls.append(Call(send_email, (n, TEMPLATES[n % len(TEMPLATES)])))
    return calls


def without_commit_wait(dsn: str) -> str:
    """``dsn`` whose sessions do not wait for each commit to reach the disk: the demo
    pushes jobs one ``.delay()`` at a time, which on a durable server costs a flush each.
    A crash could lose the last few commits, which a demo can afford."""
    options = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
    return psycopg.conninfo.make_conninfo(dsn, options=f"{options} -c synchronous_commit=off".strip())


def push_one(call: Call) -> uuid.UUID:
    result = call.task.apply_async(call.args, **call.options) if call.options else call.task.delay(*call.args)
    return uuid.UUID(result.id)


def push_all(calls: Sequence[Call]) -> list[uuid.UUID]:
    """Push each call the Celery way (``.delay`` / ``.apply_async``), from a few threads
    as a web app's request handlers would: each push commits on its own, and Postgres
    flushes concurrent commits together."""
    progress = Progress("push ", len(calls))
    ids: list[uuid.UUID] = []
    with concurrent.futures.ThreadPoolExecutor(PUSH_THREADS) as pool:
        for job_id in pool.map(push_one, calls):
            ids.append(job_id)
            if len(ids) % PROGRESS_EVERY == 0 or len(ids) == len(calls):
                progress.update(len(ids), final=len(ids) == len(calls))
    return ids


def _summary(by_state: dict[str, int]) -> dict[str, int]:
    return {
        "done": by_state.get(JobState.SUCCEEDED.value, 0),
        "failed": by_state.get(JobState.FAILED.value, 0),
        "retrying": by_state.get(JobState.RETRYING.value, 0),
        "running": by_state.get(JobState.RUNNING.value, 0),
        "waiting": by_state.get(JobState.PENDING.value, 0) + by_state.get(JobState.SCHEDULED.value, 0),
    }


async def work_through(app: Chancy, ids: list[uuid.UUID], timeout: float) -> float:
    """Run a worker until every job in ``ids`` is finished; returns the seconds it took."""
    finished = {state.value for state in FINISHED_STATES}
    async with app, running_worker(app, shutdown_timeout=5.0):
        progress = Progress("work ", len(ids))
        while True:
            by_state = await app.store.run(app.store.admin.states_of(ids))
            done = sum(n for state, n in by_state.items() if state in finished)
            progress.update(done, _summary(by_state), final=done >= len(ids))
            if done >= len(ids):
                return progress.elapsed
            if progress.elapsed > timeout:
                raise click.ClickException(f"the jobs did not finish within {timeout:g}s")
            await asyncio.sleep(POLL_INTERVAL)


def report(app: Chancy, dsn: str, ids: list[uuid.UUID], seconds: float, dsn_option: str) -> None:
    """The outcome table, then the SQL and commands to look further (``dsn_option``
    repeats the demo's --dsn in them)."""
    admin = app.store.admin
    rows, failed = app.store.run_in_session_sync(
        in_sequence(admin.batch_summary(ids), admin.list_jobs(JobSelection(states=(JobState.FAILED,)), limit=1)))
    click.echo()
    click.echo(table(["queue", "task", "state", "jobs", "needed a retry", "mean ms"],
                     [[r["queue"], r["task"], r["state"], r["jobs"], r["retried"],
                       round(r["mean_ms"] or 0, 1)] for r in rows]))
    click.echo(f"\n{len(ids)} jobs finished in {seconds:.1f}s ({len(ids) / seconds:,.0f} jobs/s, "
               "including the scheduled ones' wait)")
    peek_counts, peek_failed = admin.peek_statements()
    shown = safe_dsn(dsn)
    hidden = ("" if shown == dsn
              else " (password hidden: put yours back in place of ***, or leave it out and set PGPASSWORD)")
    click.echo(f"""
Look at the rows yourself{hidden}:
  psql "{shown}" -c "{peek_counts}"
  psql "{shown}" -c "{peek_failed}"
Or with the CLI:
  chancy status{dsn_option}
  chancy jobs list --state failed{dsn_option}""")
    if failed:
        click.echo(f"  chancy jobs show {failed[0].id}{dsn_option}   # every attempt's traceback")
        click.echo(f"  chancy jobs retry {failed[0].id}{dsn_option}")
    click.echo(f"  chancy worker -A chancy.cli.demo_tasks -P threads{dsn_option}   # the demo's worker, with its logs")


@click.command()
@click.option("--jobs", "total", type=click.IntRange(min=1, max=1_000_000), default=3000, show_default=True,
              help="How many jobs to push.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
              help="Jobs at a time per queue.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Give up if the jobs are not all finished after this many seconds.")
@click.option("--dsn", metavar="DSN", help="Postgres to use [env CHANCY_DSN; default: the embedded per-user server].")
def demo(total: int, concurrency: int, timeout: float, dsn: str | None) -> None:
    """The quickstart: real jobs through Postgres, pushed with Celery's .delay(), run by
    a worker with a live progress line; then a summary and how to inspect the rows.

    Without --dsn or CHANCY_DSN it starts (or attaches to) the embedded per-user Postgres."""
    with translated_errors(dsn or os.environ.get("CHANCY_DSN")):
        run_demo(total, concurrency, timeout, dsn)


def run_demo(total: int, concurrency: int, timeout: float, dsn: str | None) -> None:
    import chancy.cli.demo_tasks as demo_tasks
    from chancy.compat import worker_app

    app = demo_tasks.app.chancy
    if dsn:
        app.dsn = dsn
    elif not os.environ.get("CHANCY_DSN"):
        click.echo("starting the embedded Postgres (first run: a few seconds to create it)…", err=True)
    started = time.monotonic()
    shown_dsn = app.dsn
    click.echo(f"postgres ready: {safe_dsn(shown_dsn)} ({time.monotonic() - started:.1f}s)", err=True)
    app.dsn = without_commit_wait(shown_dsn)
    click.echo("the demo's own sessions use synchronous_commit=off (no disk flush per commit; "
               "nothing else changes)", err=True)
    applied = asyncio.run(app.migrate())
    click.echo(f"schema: {'applied migration(s) ' + ', '.join(map(str, applied)) if applied else 'up to date'}",
               err=True)
    # Each outcome is summed up by the progress line; per-job log lines would tear it.
    logging.getLogger("chancy").setLevel(logging.ERROR)
    try:
        ids = push_all(plan_calls(total))
        worker_app(demo_tasks.app, concurrency=concurrency, pool="threads")
        seconds = asyncio.run(work_through(app, ids, timeout))
    except KeyboardInterrupt:
        click.echo(err=True)  # end the progress line; the worker has drained by now
        raise
    report(app, shown_dsn, ids, seconds, dsn_option=f" --dsn '{safe_dsn(dsn)}'" if dsn else "")
