"""Chancy for Django projects: ``INSTALLED_APPS += ["chancy.contrib.django"]``.

- ``python manage.py chancy worker|migrate|status|…``: the ``chancy`` CLI with Django set up
  and the project's database (see :mod:`.management.commands.chancy`).
- :class:`~chancy.contrib.django.app.DjangoChancy`: a Chancy app on a ``DATABASES`` alias
  whose pushes inside ``transaction.atomic()`` join the transaction.
- :class:`~chancy.contrib.django.backend.ChancyBackend`: a backend for Django's task
  framework (``django.tasks``, or the ``django-tasks`` backport on Django 5.2).
- Admin pages for the jobs table, with retry and cancel actions.

See docs/django.md."""

from __future__ import annotations

from typing import Any

__all__ = ["DjangoChancy", "atomic_connection", "default_app"]


def __getattr__(name: str) -> Any:
    # Lazily, so that Django can import this package (as an INSTALLED_APPS entry) before
    # its settings and apps are ready.
    if name in ("DjangoChancy", "default_app"):
        from chancy.contrib.django import app

        return getattr(app, name)
    if name == "atomic_connection":
        from chancy.contrib.django.database import atomic_connection

        return atomic_connection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
