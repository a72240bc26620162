"""``chancy jobs``: list and filter jobs, show one with every attempt's traceback; retry,
cancel or delete one job by id, or every job a filter selects (in bounded batches, with
``--dry-run`` to count first)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import click

from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.output import emit_json, job_dict, print_listing, when
from chancy.job import JobRecord, JobState
from chancy.store.admin import BULK_BATCH, BulkAction, BulkRefused, JobSelection

#: ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``: a span of time.
DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _job_id(ctx: click.Context, param: click.Parameter, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a job id (a UUID such as 0190d1e2-…)") from None


def _optional_job_id(ctx: click.Context, param: click.Parameter, value: str | None) -> uuid.UUID | None:
    return None if value is None else _job_id(ctx, param, value)


def parse_moment(value: str, now: datetime | None = None) -> datetime:
    """A duration (``1h``: that long ago) or an ISO 8601 time (UTC unless it says)."""
    value = value.strip()
    if DURATION.match(value):
        seconds = sum(float(n) * UNITS[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", value))
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{value!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a duration such as 90s, 15m, 1h, 2d or 1h30m (that long ago) "
                         "nor an ISO 8601 time such as 2026-01-31T14:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
    """List, inspect, retry, cancel and delete jobs (one by id, or all a filter selects)."""


@jobs.command("list")
@click.option("-Q", "--queue", "queues", multiple=True, help="Only this queue (repeatable).")
@click.option("-s", "--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]),
              help="Only this state (repeatable).")
@click.option("-t", "--task", help="Only this task name.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many (newest first).")
@target_options
@json_option
def list_jobs(target: Target, queues: tuple[str, ...], states: tuple[str, ...], task: str | None,
              limit: int, as_json: bool) -> None:
    """The newest jobs, filtered by queue, state and task."""
    target.require_schema()
    selection = JobSelection(states=tuple(JobState(s) for s in states), queues=queues, task=task)
    print_listing(
        target.run(target.app.store.admin.list_jobs(selection, limit)), as_json,
        to_json=job_dict, empty="no matching jobs",
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
            done: str, as_json: bool = False) -> None:
    """Apply a state change; when it does not apply, say why (``refusal`` names ``{state}``)."""
    target.require_schema()
    if not change(job_id):
        raise CliError(refusal.format(state=_existing(target, job_id).state.value), ExitCode.CONFLICT)
    if as_json:
        emit_json({"job": str(job_id), "changed": 1})
    else:
        click.echo(done)


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of a bulk action; the command receives ``selection`` (None: none given)."""
    options = [
        click.option("-s", "--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]),
                     help="Only jobs in this state (repeatable)."),
        click.option("-Q", "--queue", "queues", multiple=True, help="Only this queue (repeatable)."),
        click.option("-t", "--task", help="Only this task (its exact name)."),
        click.option("--text", help="Only jobs whose arguments contain this text (any case)."),
        click.option("--since", callback=_moment, metavar="WHEN",
                     help="Only jobs created since then: 1h, 30m, 2d (ago) or an ISO time."),
        click.option("--until", callback=_moment, metavar="WHEN", help="Only jobs created before then (as --since)."),
        click.option("--all", "everything", is_flag=True, help="Every job the action applies to (no filter needed)."),
        click.option("--dry-run", is_flag=True, help="Count the jobs it would change; change nothing."),
        click.option("--batch-size", type=click.IntRange(1, 100_000), default=BULK_BATCH, show_default=True,
                     help="Jobs changed per transaction."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(job_id: uuid.UUID | None, states: tuple[str, ...], queues: tuple[str, ...], task: str | None,
               text: str | None, since: datetime | None, until: datetime | None, everything: bool) -> JobSelection:
    selection = JobSelection(states=tuple(JobState(s) for s in states), queues=queues, task=task, text=text,
                             since=since, until=until)
    if job_id is not None:
        if not selection.is_everything or everything:
            raise click.UsageError("give either a job id or filters, not both")
        return JobSelection(ids=(job_id,))
    if selection.is_everything and not everything:
        raise click.UsageError("give a job id, or filters (--state, --queue, --task, --text, --since, --until), "
                               "or --all for every job")
    if since and until and since >= until:
        raise click.UsageError("--since must be earlier than --until")
    return selection


def _bulk(target: Target, action: BulkAction, selection: JobSelection, *, force: bool = False, dry_run: bool,
          batch_size: int, as_json: bool) -> None:
    """Run (or with ``dry_run`` count) ``action`` over ``selection`` and report the count."""
    admin = target.app.store.admin
    target.require_schema()
    try:
        if dry_run:
            count = target.run(admin.bulk_count(action, selection, force))
        else:
            count = target.run(admin.bulk(action, selection, force, batch_size))
    except BulkRefused as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        emit_json({"action": action.value, "dry_run": dry_run, ("matched" if dry_run else "changed"): count})
        return
    verb = {BulkAction.RETRY: "retried", BulkAction.CANCEL: "cancelled", BulkAction.DELETE: "deleted"}[action]
    click.echo(f"would {action.value} {count} job(s) (dry run: nothing changed)" if dry_run
               else f"{verb} {count} job(s)")


@jobs.command()
@click.argument("job_id", required=False, callback=_optional_job_id)
@selection_options
@target_options
@json_option
def retry(target: Target, job_id: uuid.UUID | None, dry_run: bool, batch_size: int, as_json: bool,
          **filters: Any) -> None:
    """Run a failed, cancelled or expired job again (with one more attempt); or every
    such job the filters select, e.g. `chancy jobs retry --state failed --task X --since 1h`."""
    selection = _selection(job_id, **filters)
    if job_id is not None and not dry_run:
        _change(target, job_id, target.app.requeue_sync,
                f"job {job_id} is {{state}}: only failed, cancelled or expired jobs can be retried",
                f"job {job_id} is pending again", as_json)
        return
    _bulk(target, BulkAction.RETRY, selection, dry_run=dry_run, batch_size=batch_size, as_json=as_json)


@jobs.command()
@click.argument("job_id", required=False, callback=_optional_job_id)
@selection_options
@target_options
@json_option
def cancel(target: Target, job_id: uuid.UUID | None, dry_run: bool, batch_size: int, as_json: bool,
           **filters: Any) -> None:
    """Cancel a waiting job, or stop a running one (its worker is told at once); or every
    job not yet finished that the filters select."""
    selection = _selection(job_id, **filters)
    if job_id is not None and not dry_run:
        _change(target, job_id, target.app.cancel_sync, f"job {job_id} is already {{state}}",
                f"job {job_id} cancelled", as_json)
        return
    _bulk(target, BulkAction.CANCEL, selection, dry_run=dry_run, batch_size=batch_size, as_json=as_json)


@jobs.command()
@click.argument("job_id", required=False, callback=_optional_job_id)
@selection_options
@click.option("--force", is_flag=True, help="Also delete jobs that have not run yet (never a running one).")
@target_options
@json_option
def delete(target: Target, job_id: uuid.UUID | None, dry_run: bool, batch_size: int, as_json: bool, force: bool,
           **filters: Any) -> None:
    """Delete a finished job (succeeded, failed, cancelled, expired), or every finished job
    the filters select; with --force also waiting ones. A running job is never deleted:
    cancel it first."""
    selection = _selection(job_id, **filters)
    if job_id is not None and not dry_run:
        record = _existing(target, job_id)
        if not _bulk_count_of(target, BulkAction.DELETE, selection, force):
            hint = "cancel it first" if record.state is JobState.RUNNING else "add --force to delete it anyway"
            raise CliError(f"job {job_id} is {record.state.value}: {hint}", ExitCode.CONFLICT)
    _bulk(target, BulkAction.DELETE, selection, force=force, dry_run=dry_run, batch_size=batch_size,
          as_json=as_json)


def _bulk_count_of(target: Target, action: BulkAction, selection: JobSelection, force: bool) -> int:
    return target.run(target.app.store.admin.bulk_count(action, selection, force))
