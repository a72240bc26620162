"""``celery.app``'s surface: the app class and ``shared_task``."""

from chancy.compat.app.base import Celery, shared_task
from chancy.compat.app.task import Task

__all__ = ["Celery", "Task", "shared_task"]
