"""``python manage.py chancy …``: every ``chancy`` command, with Django set up.

Arguments go to the ``chancy`` command line as they are (``manage.py chancy worker -Q a -P
thread``, ``manage.py chancy status``, ``manage.py chancy --help``). Unless a command is
given ``-A``, it works on the project's app: ``CHANCY['APP']``, else a DjangoChancy on
``CHANCY['DATABASE']`` (default ``default``) and its queues (``CHANCY['QUEUES']``)."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand


def app_spec() -> str:
    from chancy.contrib.django.conf import chancy_settings

    return chancy_settings().app or "chancy.contrib.django.default:app"


#: manage.py's own options, which Django has applied before running any command.
DJANGO_OPTIONS = ("--settings", "--pythonpath")


def without_django_options(argv: list[str]) -> list[str]:
    """``argv`` less ``--settings`` and ``--pythonpath`` (either form), which Django read."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


def run_chancy(argv: list[str], prog_name: str) -> int:
    """Run ``chancy ARGV`` with the project's app as the default ``-A``; its exit code."""
    from chancy.cli import cli

    try:
        cli.main(args=["-A", app_spec(), *argv], prog_name=prog_name)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


class Command(BaseCommand):
    help = "Run a chancy command (worker, migrate, status, jobs, …) on this project's database."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("args", nargs="...", help="the chancy command and its options (try: --help)")
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        """Skip Django's option parsing: every argument is chancy's, but for manage.py's own
        ``--settings`` and ``--pythonpath`` (applied by Django already)."""
        sys.exit(run_chancy(without_django_options(argv[2:]), f"{os.path.basename(argv[0])} {argv[1]}"))

    def print_help(self, prog_name: str, subcommand: str) -> None:
        run_chancy(["--help"], f"{os.path.basename(prog_name)} {subcommand}")

    def handle(self, *args: str, **options: Any) -> None:
        """``call_command("chancy", "status", "--json")``: a failing command raises CommandError."""
        from django.core.management.base import CommandError

        code = run_chancy(list(args), "chancy")
        if code:
            raise CommandError(f"chancy {' '.join(args)} exited {code}", returncode=code)
