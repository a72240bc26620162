"""``chancy result``: Celery's ``celery result``, read from the job row.

Unlike Celery's, it does not block by default (a pending task would hang a script):
``--wait`` or ``--timeout`` wait for the task to finish, woken by the completion
notification. The exit code says how the task ended, so scripts can branch on it."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click

from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.output import emit_json, when
from chancy.job import JobRecord, JobState


def _task_id(ctx: click.Context, param: click.Parameter, value: str) -> uuid.UUID:
    """A job id, or a custom Celery ``task_id=`` (stored under the UUID it maps to)."""
    if not value.strip():
        raise click.BadParameter("give a task id")
    try:
        return uuid.UUID(value)
    except ValueError:
        from chancy.compat.protocol import job_id_for

        return job_id_for(value)


def celery_state(record: JobRecord) -> str:
    """The state as Celery names it (SUCCESS, FAILURE, RETRY, REVOKED …)."""
    from chancy.compat import states

    celery = record.meta.get("celery") or {}
    return states.from_job_state(record.state, custom=celery.get("state"))


def _summary(record: JobRecord) -> dict[str, Any]:
    error = record.errors[-1] if record.errors else None
    return {
        "id": str(record.id), "task": record.func, "state": record.state.value, "celery_state": celery_state(record),
        "result": record.result if record.state is JobState.SUCCEEDED else None,
        "error": f"{error.get('type', '?')}: {error.get('message', '')}" if error else None,
        "traceback": record.traceback, "attempts": record.attempts, "max_attempts": record.max_attempts,
        "completed_at": record.completed_at,
    }


@click.command()
@click.argument("task_id", callback=_task_id)
@click.option("--traceback", "only_traceback", is_flag=True,
              help="Print the traceback of the last failed attempt instead of the result.")
@click.option("--wait", is_flag=True, help="Wait until the task finishes, however long that takes.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait at most this long for the task to finish.")
@target_options
@json_option
def result(target: Target, task_id: uuid.UUID, only_traceback: bool, wait: bool, timeout: float | None,
           as_json: bool) -> None:
    """Print a task's result as JSON; for a task that did not succeed, its state and the
    traceback of its last failed attempt.

    \b
    Exit codes: 0 the task succeeded; 1 it failed, was cancelled or expired, or has not
    finished (yet: see --wait, --timeout); 6 no task has this id."""
    target.require_schema()
    app = target.app
    record = app.get_job_sync(task_id)
    if record is None:
        raise CliError(f"no task with id {task_id}", ExitCode.NOT_FOUND)
    if not record.is_finished and (wait or timeout is not None):
        try:
            record = app.wait_sync(app.reference(task_id, record.queue), timeout=timeout)
        except TimeoutError:
            record = app.get_job_sync(task_id) or record
            click.echo(f"task {task_id} did not finish within {timeout:g}s", err=True)
    _print(record, only_traceback, as_json)
    if record.state is not JobState.SUCCEEDED:
        sys.exit(ExitCode.FAILED)


def _print(record: JobRecord, only_traceback: bool, as_json: bool) -> None:
    if as_json:
        emit_json(_summary(record))
    elif only_traceback:
        if record.traceback:
            click.echo(record.traceback.rstrip())
    elif record.state is JobState.SUCCEEDED:
        click.echo(json.dumps(record.result, default=repr))
    else:
        summary = _summary(record)
        click.echo(f"{summary['celery_state']} ({record.state.value}), attempt {record.attempts} of "
                   f"{record.max_attempts}" + (f", at {when(record.completed_at)}" if record.completed_at else ""))
        if summary["error"]:
            click.echo(summary["error"])
        if record.traceback:
            click.echo(record.traceback.rstrip())
        if not record.is_finished:
            click.echo("(not finished: --wait or --timeout SECONDS waits for it)")
