"""``get_task_logger``: ``from celery.utils.log import get_task_logger`` keeps working."""

from __future__ import annotations

import logging

#: Parent of every task logger, so one handler or level covers them all (as in Celery).
task_logger = logging.getLogger("celery.task")


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a task module, a child of ``celery.task``."""
    if name in ("celery.task", "celery"):
        raise RuntimeError(f"Logger name {name!r} is reserved; use __name__")
    logger = logging.getLogger(name)
    if logger.parent is logging.getLogger() or logger.parent is None:
        logger.parent = task_logger
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
