"""Chancy's Django settings, read from ``settings.CHANCY`` (a dict; every key optional)::

    CHANCY = {
        "DATABASE": "default",        # the DATABASES alias holding Chancy's tables
        "PREFIX": "chancy_",          # their table prefix
        "APP": "proj.jobs:app",       # the app `manage.py chancy` runs by default (a DjangoChancy)
        "QUEUES": {"default": {"concurrency": 4, "executor": "thread"}},
        "TASK_MODULES": ["tasks"],    # submodules of each installed app imported at startup
        "ALLOWED_IMPORTS": [],        # see Chancy(allowed_imports=...)
    }

Unknown keys and wrong types are refused with ImproperlyConfigured naming the key, so a
typo never silently falls back to a default."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


@dataclasses.dataclass(frozen=True)
class ChancySettings:
    database: str = "default"
    prefix: str = "chancy_"
    app: str | None = None
    queues: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    task_modules: tuple[str, ...] = ("tasks",)
    allowed_imports: tuple[str, ...] = ()


_KEYS = {field.name.upper(): field.name for field in dataclasses.fields(ChancySettings)}
_QUEUE_KEYS = ("concurrency", "executor", "polling_interval")


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ImproperlyConfigured(f"CHANCY[{key!r}] must be a list of strings, got {value!r}")
    return tuple(value)


def _queues(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"CHANCY['QUEUES'] must map queue names to their settings, got {value!r}")
    queues: dict[str, dict[str, Any]] = {}
    for name, options in value.items():
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"CHANCY['QUEUES'][{name!r}] must be a dict of {', '.join(_QUEUE_KEYS)}")
        unknown = set(options) - set(_QUEUE_KEYS)
        if unknown:
            raise ImproperlyConfigured(f"CHANCY['QUEUES'][{name!r}]: unknown setting(s) {sorted(unknown)}; "
                                       f"valid: {', '.join(_QUEUE_KEYS)}")
        queues[name] = dict(options)
    return queues


@functools.cache
def chancy_settings() -> ChancySettings:
    """``settings.CHANCY``, checked; read once (each enqueue asks), again after a test's
    ``override_settings`` of CHANCY or DATABASES."""
    raw = getattr(django_settings, "CHANCY", {}) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.CHANCY must be a dict, got {type(raw).__name__}")
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.CHANCY: unknown key(s) {sorted(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("DATABASE", "PREFIX", "APP"):
            if not isinstance(value, str) or not value:
                raise ImproperlyConfigured(f"CHANCY[{key!r}] must be a non-empty string, got {value!r}")
        elif key == "QUEUES":
            value = _queues(value)
        else:
            value = _strings(key, value)
        values[_KEYS[key]] = value
    found = ChancySettings(**values)
    if found.database not in django_settings.DATABASES:
        raise ImproperlyConfigured(f"CHANCY['DATABASE'] is {found.database!r}, which is not in DATABASES "
                                   f"({', '.join(django_settings.DATABASES)})")
    return found


def _forget(setting: str, **_: Any) -> None:
    if setting in ("CHANCY", "DATABASES"):
        chancy_settings.cache_clear()


setting_changed.connect(_forget)
