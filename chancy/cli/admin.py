"""Day-to-day commands on the database: ``info``, ``migrate``, ``status``, ``purge``."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys

import click

from chancy.store.pg import migrations
from chancy.app import Chancy
from chancy.cli.common import CliError, ExitCode, Target, json_option, schema_version, target_options
from chancy.cli.output import age, emit_json, safe_dsn, span, table, when
from chancy.job import FINISHED_STATES, JobState
from chancy.store.admin import PURGEABLE_STATES, TableHealth

STATE_COLUMNS = [s.value for s in JobState]
WAITING_STATES = (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING)


def split_queues(value: str | None) -> list[str] | None:
    """``-Q a,b`` (Celery's comma-separated form, also for ``-d``) as a list; None when not given."""
    if not value:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give at least one name, e.g. default,emails")
    return names


# --- info ------------------------------------------------------------------------------


def _server_kind(target: Target) -> str:
    if target.dsn:
        return "given (--dsn / CHANCY_DSN)"
    if target.app_spec:
        return "the app's configuration (the embedded server if it names none)"
    return "embedded (per-user server from chancy[embedded])"


@click.command()
@target_options
@json_option
def info(target: Target, as_json: bool) -> None:
    """Which Postgres is in use (embedded or given), its version, the DSN, the schema."""
    from chancy.store.pg.server import server_info

    app = target.app
    server = server_info(app.dsn)
    version = asyncio.run(schema_version(app))
    data = {
        "chancy_version": importlib.metadata.version("chancy"),
        "server": _server_kind(target),
        "server_version": server["server_version"],
        "dsn": safe_dsn(app.dsn),
        "data_directory": server["data_directory"],
        "prefix": app.names.prefix,
        "schema_version": version,
        "schema_latest": migrations.LATEST_VERSION,
    }
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key.replace('_', ' '):>16}: {'-' if value is None else value}")
    if version < migrations.LATEST_VERSION:
        click.echo("\nThe schema is not up to date: run `chancy migrate`.")


# --- migrate -----------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@target_options
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option("--to", "to_version", type=click.IntRange(min=1), help="Stop at this version.")
@click.pass_context
def migrate(ctx: click.Context, target: Target, dry_run: bool, to_version: int | None) -> None:
    """Create or upgrade Chancy's tables (safe to run again; serialised across processes).

    `chancy migrate status` shows the versions without changing anything."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = target
        return
    app = target.app
    if dry_run:
        current = asyncio.run(schema_version(app))
        todo = migrations.pending(current, to_version)
        for migration in todo:
            click.echo(f"-- migration {migration.version}: {migration.description}")
            for statement in migration.compose(app.names):
                click.echo(_dedent_sql(statement.as_string(None)) + ";\n")
        click.echo(f"-- {len(todo)} migration(s) pending (schema at version {current}); nothing was changed",
                   err=True)
        return
    applied = asyncio.run(app.migrate(to_version))
    if applied:
        click.echo(f"applied migration(s) {', '.join(map(str, applied))}; schema at version {applied[-1]}")
    else:
        click.echo("schema already up to date")


def _dedent_sql(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in lines[1:]), default=0)
    return "\n".join([lines[0].strip(), *(line[indent:] for line in lines[1:])])


@migrate.command("status")
@target_options
@json_option
def migrate_status(target: Target, as_json: bool) -> None:
    """Show the schema version and pending migrations; exit 5 if any are pending."""
    current = asyncio.run(schema_version(target.app))
    todo = migrations.pending(current)
    data = {"current": current, "latest": migrations.LATEST_VERSION,
            "pending": [{"version": m.version, "description": m.description} for m in todo]}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"schema version {current} of {migrations.LATEST_VERSION}")
        for m in todo:
            click.echo(f"  pending: {m.version} {m.description}")
    if todo:
        sys.exit(ExitCode.SCHEMA_OUT_OF_DATE)


# --- status ------------------------------------------------------------------------------


async def _leader(app: Chancy) -> str | None:
    from chancy.plugins.leadership import current_leader

    try:
        return await current_leader(app)
    finally:
        await app.close()


@click.command()
@click.option("--since", "window", type=click.FloatRange(min=0, min_open=True), default=86400.0, show_default=True,
              metavar="SECONDS", help="Count finished jobs of this recent window (live ones: all).")
@click.option("--all", "count_all", is_flag=True, help="Count every finished job (reads them all: slow on big tables).")
@target_options
@json_option
def status(target: Target, window: float, count_all: bool, as_json: bool) -> None:
    """Queues with their job counts by state, workers with their heartbeat age, the leader.

    Live jobs (pending, scheduled, running, retrying) are all counted; finished ones
    (succeeded, failed, cancelled, expired) for the last --since seconds, or --all."""
    from chancy.plugins.queues import QueueAdmin

    target.require_schema()
    admin = target.app.store.admin
    counts = target.run(admin.counts(None if count_all else window))
    declared = QueueAdmin(target.app).list_sync()
    paused = {s.name for s in declared if s.paused}
    workers = target.run(admin.workers())
    health = target.run(admin.table_health())
    leader = asyncio.run(_leader(target.app))
    queues = [{"queue": name, "paused": name in paused, **{s: counts.get(name, {}).get(s, 0) for s in STATE_COLUMNS}}
              for name in sorted(set(counts) | {s.name for s in declared})]
    if as_json:
        emit_json({"queues": queues, "workers": workers, "leader": leader,
                   "finished_window_seconds": None if count_all else window, "table": health.as_dict()})
        return
    if queues:
        finished = {s.value for s in FINISHED_STATES}
        suffix = "" if count_all else f" ({span(window)})"
        headers = [state + (suffix if state in finished else "") for state in STATE_COLUMNS]
        click.echo(table(["queue", "paused", *headers],
                         [[q["queue"], "yes" if q["paused"] else "-", *(q[s] for s in STATE_COLUMNS)] for q in queues]))
    else:
        click.echo("no jobs yet")
    click.echo()
    if workers:
        rows = [[w["worker_id"] + (" (leader)" if w["worker_id"] == leader else ""), w["hostname"], w["pid"],
                 ",".join(w["queues"]), w["running"],
                 age(w["heartbeat_age"]) + ("" if w["alive"] else " (presumed dead)"), when(w["started_at"])]
                for w in workers]
        click.echo(table(["worker", "host", "pid", "queues", "running", "heartbeat", "started"], rows))
    else:
        click.echo("no workers running")
    click.echo(f"leader: {leader or 'none'}")
    click.echo(_health_line(health))


def _health_line(health: TableHealth) -> str:
    """The jobs table's dead rows and what may be holding them there."""
    total = health.live_rows + health.dead_rows
    share = f" ({100 * health.dead_rows / total:.0f}%)" if total else ""
    vacuumed = ("never vacuumed" if health.since_vacuum_seconds is None
                else f"vacuumed {age(health.since_vacuum_seconds)} ago")
    oldest = ("none" if health.oldest_transaction_seconds is None
              else age(health.oldest_transaction_seconds))
    return (f"jobs table: {health.live_rows:,} live rows, {health.dead_rows:,} dead{share}, {vacuumed}; "
            f"oldest open transaction: {oldest}")


# --- purge -------------------------------------------------------------------------------


@click.command()
@click.option("-Q", "--queues", help="Only these queues (comma-separated); default: all.")
@click.option("--state", "states", multiple=True,
              type=click.Choice(sorted(s.value for s in PURGEABLE_STATES)),
              help="States to delete (repeatable) [default: pending, scheduled, retrying].")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@target_options
@json_option
def purge(target: Target, queues: str | None, states: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Delete waiting jobs (or the given states) for good. Running jobs are never
    touched: cancel those with `chancy jobs cancel`."""
    target.require_schema()
    chosen = [JobState(s) for s in states] or list(WAITING_STATES)
    queue_names = split_queues(queues)
    where = f"queue(s) {', '.join(queue_names)}" if queue_names else "all queues"
    if not force:
        if not sys.stdin.isatty():
            raise CliError("purge deletes jobs: pass --force when not running interactively", ExitCode.USAGE)
        click.confirm(f"Delete every {'/'.join(s.value for s in chosen)} job in {where}?", abort=True)
    deleted = target.run(target.app.store.admin.purge(chosen, queue_names))
    if as_json:
        emit_json({"deleted": deleted, "total": sum(deleted.values())})
        return
    for queue, count in deleted.items():
        click.echo(f"{queue}: {count} job(s) deleted")
    click.echo(f"purged {sum(deleted.values())} job(s) from {where}")

