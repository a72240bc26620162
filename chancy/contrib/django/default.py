"""The ``-A`` that ``manage.py chancy`` gives commands when ``CHANCY['APP']`` is unset:
this module's ``app`` is the project's :func:`~chancy.contrib.django.app.default_app`."""

from __future__ import annotations

from typing import Any

# Imported for its process-pool hook: a child importing this module (the worker's -A) sets
# Django up before it imports the tasks' modules.
from chancy.contrib.django import app as _app  # noqa: F401


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app.default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
