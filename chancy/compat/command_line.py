"""``app.start()`` and ``app.worker_main()``: run the ``chancy`` program for a Celery app,
as Celery's run the ``celery`` program (``python tasks.py worker`` starts a worker).

The program sits above this layer: its commands import ``chancy.compat`` (a Celery app's
worker, beat, the demo). So it is not imported from here, which would make the two import
each other, but found as what it is: the installed ``chancy`` console script."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Sequence

from chancy.errors import ConfigurationError


def run_program(app: object, argv: Sequence[str]) -> int:
    """Run the ``chancy`` command ``argv`` with ``app`` as its ``-A``. Returns 0 when the
    command succeeded; any other exit code ends the process, as the ``chancy`` script would."""
    try:
        program()(["-A", app_spec_of(app), *argv], prog_name=os.path.basename(sys.argv[0]) or "chancy")
    except SystemExit as exc:
        if exc.code:
            raise
    return 0


def program() -> Callable[..., Any]:
    """The function of the installed ``chancy`` script: ``main(argv, prog_name)``."""
    try:
        scripts = metadata.distribution("chancy").entry_points.select(group="console_scripts", name="chancy")
    except metadata.PackageNotFoundError:
        scripts = metadata.EntryPoints(())
    for script in scripts:
        return script.load()
    raise ConfigurationError("app.start() runs the chancy command line, which is not installed in this "
                             "environment (pip install chancy)")


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
