"""Finding the user's app from ``-A/--app``, the way ``celery -A`` does.

Accepted forms: ``proj`` (its ``app``, ``chancy`` or ``celery`` attribute, else the same
in its ``proj.celery`` submodule, else the only app object in it), ``proj.celery`` (a module, as
above), ``proj:app`` and ``proj.app`` (an attribute). The object may be a
:class:`~chancy.Chancy` or anything with a ``.chancy`` attribute holding one (a
``chancy.compat.Celery`` app)."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from chancy.app import Chancy
from chancy.errors import ConfigurationError
from chancy.executors import process

PREFERRED_NAMES = ("app", "chancy", "celery")


def core_app(obj: Any) -> Chancy | None:
    """The :class:`Chancy` behind ``obj`` (itself, or its ``.chancy``), else None."""
    if isinstance(obj, Chancy):
        return obj
    inner = getattr(obj, "chancy", None) if not isinstance(obj, ModuleType) else None
    return inner if isinstance(inner, Chancy) else None


def _named_app(module: ModuleType) -> Any | None:
    for name in PREFERRED_NAMES:
        obj = getattr(module, name, None)
        if core_app(obj) is not None:
            return obj
    return None


def _only_app(module: ModuleType) -> Any | None:
    found = {id(v): v for v in vars(module).values() if core_app(v) is not None}
    if len(found) > 1:
        raise ConfigurationError(
            f"Module {module.__name__!r} holds {len(found)} apps; say which with -A {module.__name__}:NAME"
        )
    return next(iter(found.values()), None)


def _import(name: str) -> ModuleType | None:
    """The module, or None if that module (not one it imports) does not exist. A module
    found is one process-pool children import too (see ``process.app_modules``)."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise
    process.app_modules.append(module.__name__)
    return module


def _attribute(module_name: str, path: str, spec: str) -> Any:
    module = _import(module_name)
    if module is None:
        raise ConfigurationError(f"-A {spec}: no module named {module_name!r} (run from your project's directory?)")
    obj: Any = module
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"-A {spec}: module {module_name!r} has no attribute {path!r}") from None
    return obj


def find_app(spec: str) -> Any:
    """The app object named by ``spec`` (see the module docstring). Like Celery, the
    current directory is importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, colon, attr = spec.partition(":")
    if colon:
        obj = _attribute(module_name, attr, spec)
    else:
        obj = None
        module = _import(spec)
        if module is not None:
            # Celery's order: a named app, then the package's celery submodule, then any app.
            obj = _named_app(module)
            if obj is None and getattr(module, "__path__", None):
                submodule = _import(spec + ".celery")
                obj = submodule and (_named_app(submodule) or _only_app(submodule))
            obj = obj or _only_app(module)
            if obj is None:
                raise ConfigurationError(
                    f"-A {spec}: found no Chancy or Celery app in module {spec!r}; "
                    f"name it with -A {spec}:NAME"
                )
        elif "." in spec:
            parent, _, name = spec.rpartition(".")
            obj = _attribute(parent, name, spec)
        else:
            raise ConfigurationError(f"-A {spec}: no module named {spec!r} (run from your project's directory?)")
    if core_app(obj) is None:
        raise ConfigurationError(f"-A {spec}: {obj!r} is neither a Chancy app nor a Celery app with .chancy")
    return obj


def task_names(obj: Any) -> list[str]:
    """The task names an app registers, sorted. A Celery-style app is finalized first
    (its ``include``/``imports`` imported, its packages autodiscovered), as its worker
    would be."""
    app = core_app(obj)  # for a Celery-style app, building its core app finalizes it
    assert app is not None
    return sorted(app.tasks if obj is app else obj.tasks)
