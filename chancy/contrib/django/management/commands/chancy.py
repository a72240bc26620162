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
        """Skip Django's option parsing: every argument is chancy's."""
        sys.exit(run_chancy(argv[2:], f"{os.path.basename(argv[0])} {argv[1]}"))

    def print_help(self, prog_name: str, subcommand: str) -> None:
        run_chancy(["--help"], f"{os.path.basename(prog_name)} {subcommand}")

    def handle(self, *args: str, **options: Any) -> None:
        """``call_command("chancy", "status", "--json")``: a failing command raises CommandError."""
        from django.core.management.base import CommandError

        code = run_chancy(list(args), "chancy")
        if code:
            raise CommandError(f"chancy {' '.join(args)} exited {code}", returncode=code)
