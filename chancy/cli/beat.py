"""``chancy beat``: Celery's ``celery beat``, for deployments that keep a beat process.

Nothing needs it: schedules live in the database and one worker of the app fires them.
What it does: write a Celery-style app's ``beat_schedule`` / ``add_periodic_task``
entries to the database (as every worker of that app does at start: the whole set, so an
emptied one unschedules the app's old entries), print the app's schedules with their next
run, and then — unless ``--once`` — fire them itself until stopped. Everything is scoped to
the app's schedule namespace (:mod:`chancy.namespaces`): another app's schedules on the
same database are neither synced, listed, deleted nor fired. Each tick is pushed once
however many processes fire (see :mod:`chancy.plugins.cron`), so a beat container next to
the workers never doubles a job, and keeps schedules firing when no worker runs ``-B`` (a
native app's workers fire only with ``-B``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import click

from chancy import logs
from chancy.app import Chancy
from chancy.cli.common import Target, json_option, target_options
from chancy.cli.output import print_listing, when
from chancy.plugins.cron import Cron
from chancy.store.schedules import Schedule


def _timing(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    return f"every {schedule.every:g}s"


def _schedule_dict(schedule: Schedule) -> dict[str, Any]:
    return {"namespace": schedule.namespace, "name": schedule.name, "task": schedule.job.func,
            "cron": schedule.cron, "every": schedule.every, "timezone": schedule.timezone,
            "next_run": schedule.next_fire_at, "last_run": schedule.last_fired_at, "enabled": schedule.enabled}


def _print_schedules(namespace: str, schedules: list[Schedule], as_json: bool) -> None:
    print_listing(
        schedules, as_json, to_json=_schedule_dict,
        empty=f"no schedules stored in namespace {namespace!r} (beat_schedule is empty and nothing called "
              "Cron.schedule)",
        headers=["schedule", "task", "timing", "next run", "last run"],
        row=lambda s: [s.name, s.job.func, _timing(s), when(s.next_fire_at) if s.enabled else "disabled",
                       when(s.last_fired_at)])


def _cron_of(app: Chancy) -> Cron:
    """The app's own cron plugin (its interval and catch-up), else the defaults."""
    return next((p for p in app.plugins if isinstance(p, Cron)), None) or Cron()


async def _fire_until_signalled(app: Chancy, cron: Cron) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    firing = asyncio.ensure_future(cron.fire_forever(app))
    try:
        await asyncio.wait([firing, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        firing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await firing
        await app.close()


@click.command()
@click.option("--once", is_flag=True, help="Sync and print the schedules, then exit (a deploy step).")
@click.option("-l", "--loglevel", type=click.Choice(logs.LEVELS, case_sensitive=False), default="INFO",
              show_default=True, help="Log level.")
@target_options
@json_option
def beat(target: Target, once: bool, loglevel: str, as_json: bool) -> None:
    """Sync the app's beat schedule to the database, print every schedule's next run, and
    fire due schedules until SIGTERM or Ctrl-C (with --once: exit after printing).

    Running it is optional: one worker of the app fires its schedules already (any worker
    of a Celery-style app; a native app's workers with -B). Each tick is pushed once however
    many processes fire, so a beat process next to them never doubles a job. It serves no
    queue and takes no part in leadership: recovery and pruning stay with the workers.
    Only the app's schedule namespace is synced, listed and fired (a Celery app's main
    name or beat_schedule_namespace; Chancy(namespace=...); without -A: "default").

    \b
    chancy beat -A proj           keep a beat container, as with celery beat
    chancy beat -A proj --once    write the schedule at deploy time and exit
    """
    logs.setup(loglevel, "text")
    target.require_schema()
    obj, app = target.app_object, target.app
    if obj is not app:  # a Celery-style app: its beat_schedule and add_periodic_task entries
        from chancy.compat.beat import sync_schedule

        synced = sync_schedule(obj)
        click.echo(f"synced {len(synced)} beat_schedule entr{'y' if len(synced) == 1 else 'ies'} "
                   f"to namespace {app.namespace!r}", err=True)
    _print_schedules(app.namespace, Cron.schedules_sync(app), as_json)
    if once:
        return
    click.echo(f"chancy beat: firing the due schedules of namespace {app.namespace!r} until SIGTERM or Ctrl-C",
               err=True)
    asyncio.run(_fire_until_signalled(app, _cron_of(app)))
    click.echo("chancy beat: stopped", err=True)
