"""Celery's "Using Celery in your application" layout: the app in proj/celery.py, loaded
when the package is imported, so that @shared_task binds to it."""

from .celery import app as celery_app

__all__ = ("celery_app",)
