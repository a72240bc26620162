"""``chancy queue``: runtime queue settings through :class:`~chancy.plugins.queues.QueueAdmin`
— declare, pause, resume, delete, list — applied by running workers without a restart."""

from __future__ import annotations

from datetime import datetime

import click

from chancy.cli.common import CliError, ExitCode, Target, json_option, target_options
from chancy.cli.output import print_listing, when
from chancy.plugins.queues import QueueAdmin, QueueSettings


#: QueueAdmin reads an open-ended pause as the end of year 9999.
OPEN_ENDED_YEAR = 9999


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, float] | None:
    """``100/60`` (100 starts per 60 s) or ``10`` (per second)."""
    if value is None:
        return None
    limit, _, per = value.partition("/")
    try:
        return int(limit), float(per or 1)
    except ValueError:
        raise click.BadParameter(f"{value!r}: write JOBS or JOBS/SECONDS, e.g. 100/60") from None


def _admin(target: Target) -> QueueAdmin:
    target.require_schema()
    return QueueAdmin(target.app)


def _pause_end(settings: QueueSettings) -> datetime | None:
    """When the pause ends; None when not paused or paused until resumed."""
    until = settings.paused_until
    return until if until is not None and until.year < OPEN_ENDED_YEAR else None


def _settings_dict(settings: QueueSettings) -> dict[str, object]:
    return {"name": settings.name, "concurrency": settings.concurrency, "paused": settings.paused,
            "paused_until": _pause_end(settings), "rate_limit": settings.rate_limit,
            "rate_period": settings.rate_period, "updated_at": settings.updated_at}


def _existing(admin: QueueAdmin, name: str) -> QueueSettings:
    settings = admin.get_sync(name)
    if settings is None:
        raise CliError(f"queue {name!r} has no runtime settings (declare it first)", ExitCode.NOT_FOUND)
    return settings


@click.group()
def queue() -> None:
    """Change queue settings at runtime: running workers apply them at once."""


@queue.command("list")
@target_options
@json_option
def list_queues(target: Target, as_json: bool) -> None:
    """Queues with runtime settings (a queue without any runs on its code's settings)."""
    print_listing(
        _admin(target).list_sync(), as_json, to_json=_settings_dict, empty="no queue has runtime settings",
        headers=["queue", "paused until", "concurrency", "rate limit"],
        row=lambda s: [s.name, (when(_pause_end(s)) if _pause_end(s) else "until resumed") if s.paused else "-",
                       s.concurrency or "code's", f"{s.rate_limit}/{s.rate_period:g}s" if s.rate_limit else "-"])


@queue.command()
@click.argument("name")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Cap on each worker's concurrent jobs.")
@click.option("--rate-limit", callback=_rate, metavar="JOBS[/SECONDS]",
              help="At most JOBS starts per SECONDS (default 1) across all workers.")
@target_options
def declare(target: Target, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None) -> None:
    """Create a queue's settings or overwrite them (a pause is kept)."""
    _admin(target).declare_sync(name, concurrency=concurrency, rate_limit=rate_limit)
    click.echo(f"queue {name!r} declared")


@queue.command()
@click.argument("name")
@click.option("--for", "seconds", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Resume by itself after this long [default: until `chancy queue resume`].")
@target_options
def pause(target: Target, name: str, seconds: float | None) -> None:
    """Stop starting the queue's jobs (running ones finish)."""
    _admin(target).pause_sync(name, seconds)
    click.echo(f"queue {name!r} paused" + (f" for {seconds:g}s" if seconds else " until resumed"))


@queue.command()
@click.argument("name")
@target_options
def resume(target: Target, name: str) -> None:
    """Start running the queue's jobs again."""
    admin = _admin(target)
    if not _existing(admin, name).paused:
        raise CliError(f"queue {name!r} is not paused", ExitCode.CONFLICT)
    admin.resume_sync(name)
    click.echo(f"queue {name!r} resumed")


@queue.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete the queue's waiting jobs.")
@target_options
def delete(target: Target, name: str, purge: bool) -> None:
    """Drop a queue's runtime settings (workers fall back to the code's settings)."""
    admin = _admin(target)
    _existing(admin, name)
    purged = admin.delete_sync(name, purge=purge)
    click.echo(f"queue {name!r} deleted" + (f"; {purged} waiting job(s) purged" if purge else ""))
