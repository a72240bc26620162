"""``chancy jobs``: list and filter jobs, show one with every attempt's traceback, retry
a failed one, cancel a live one."""

from __future__ import annotations

import uuid
from typing import Callable

import click

from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.output import emit_json, job_dict, print_listing, when
from chancy.job import JobRecord, JobState
from chancy.queues.admin_sql import AdminSQL
from chancy.queues.sql import single


def _job_id(ctx: click.Context, param: click.Parameter, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a job id (a UUID such as 0190d1e2-…)") from None


def _existing(target: Target, job_id: uuid.UUID) -> JobRecord:
    record = target.app.get_job_sync(job_id)
    if record is None:
        raise CliError(f"no job with id {job_id}", ExitCode.NOT_FOUND)
    return record


def print_job(record: JobRecord, as_json: bool) -> None:
    """Every field of a job, then each failed attempt's traceback."""
    if as_json:
        emit_json(job_dict(record))
        return
    fields = [
        ("id", record.id), ("task", record.func), ("queue", record.queue), ("state", record.state.value),
        ("attempts", f"{record.attempts} of {record.max_attempts}"), ("priority", record.priority),
        ("args", list(record.args)), ("kwargs", record.kwargs), ("created", when(record.created_at)),
        ("scheduled", when(record.scheduled_at)), ("started", when(record.started_at)),
        ("completed", when(record.completed_at)), ("expires", when(record.expires_at)),
        ("worker", record.taken_by or "-"), ("unique key", record.unique_key or "-"),
        ("result", record.result if record.state is JobState.SUCCEEDED else "-"),
    ]
    if record.meta:
        fields.append(("meta", record.meta))
    for label, value in fields:
        click.echo(f"{label:>10}: {value}")
    for number, error in enumerate(record.errors, 1):
        click.echo(f"\n--- attempt {error.get('attempt', number)} failed at {error.get('at', '?')}: "
                   f"{error.get('type', '?')}: {error.get('message', '')}")
        click.echo((error.get("traceback") or "(no traceback)").rstrip())


@click.group()
def jobs() -> None:
    """List, inspect, retry and cancel jobs."""


@jobs.command("list")
@click.option("-Q", "--queue", "queues", multiple=True, help="Only this queue (repeatable).")
@click.option("-s", "--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]),
              help="Only this state (repeatable).")
@click.option("-t", "--task", help="Only this task name.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many (newest first).")
@target_options
@json_option
def list_jobs(target: Target, queues: tuple[str, ...], states: tuple[str, ...], task: str | None,
              limit: int, as_json: bool) -> None:
    """The newest jobs, filtered by queue, state and task."""
    target.require_schema()
    statement = AdminSQL(target.app.names).list_jobs(
        queues=queues or None, states=[JobState(s) for s in states] or None, task=task, limit=limit)
    print_listing(
        target.run(single(statement)), as_json, to_json=job_dict, empty="no matching jobs",
        headers=["id", "queue", "task", "state", "attempts", "priority", "created", "last error"],
        row=lambda r: [str(r.id), r.queue, r.func, r.state.value, f"{r.attempts}/{r.max_attempts}", r.priority,
                       when(r.created_at), (r.errors[-1].get("type", "") if r.errors else "")])


@jobs.command()
@click.argument("job_id", callback=_job_id)
@target_options
@json_option
def show(target: Target, job_id: uuid.UUID, as_json: bool) -> None:
    """One job in full, with the traceback of every failed attempt."""
    target.require_schema()
    print_job(_existing(target, job_id), as_json)


def _change(target: Target, job_id: uuid.UUID, change: Callable[[uuid.UUID], bool], refusal: str,
            done: str) -> None:
    """Apply a state change; when it does not apply, say why (``refusal`` names ``{state}``)."""
    target.require_schema()
    if not change(job_id):
        raise CliError(refusal.format(state=_existing(target, job_id).state.value), ExitCode.CONFLICT)
    click.echo(done)


@jobs.command()
@click.argument("job_id", callback=_job_id)
@target_options
def retry(target: Target, job_id: uuid.UUID) -> None:
    """Run a failed, cancelled or expired job again (with one more attempt)."""
    _change(target, job_id, target.app.requeue_sync,
            f"job {job_id} is {{state}}: only failed, cancelled or expired jobs can be retried",
            f"job {job_id} is pending again")


@jobs.command()
@click.argument("job_id", callback=_job_id)
@target_options
def cancel(target: Target, job_id: uuid.UUID) -> None:
    """Cancel a waiting job, or stop a running one (its worker is told at once)."""
    _change(target, job_id, target.app.cancel_sync, f"job {job_id} is already {{state}}", f"job {job_id} cancelled")
