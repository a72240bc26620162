"""Logging for Chancy processes: one call sets the level and the format of every log line.

``text`` is for a terminal (time, level, logger, message); ``json`` is one object per line
for log shippers, carrying the fields a log call passes in ``extra`` (the worker's job
lines carry ``job_id``, ``task``, ``queue``, ``attempt``, ``outcome`` and ``duration``).

Every record logged while a job runs (by the task, or by any library it calls, under every
pool) carries that job's ``job_id``, ``task``, ``queue`` and ``attempt`` too, added by
:class:`JobContextFilter` from :data:`chancy.execution.current_job`: JSON lines hold them
as fields, text lines end with ``[job=… task=… attempt=…]``."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from chancy.execution import current_job

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")}


#: Set on a record by :class:`JobContextFilter` (hidden from JSON: it starts with ``_``).
_IN_JOB = "_chancy_in_job"


class JobContextFilter(logging.Filter):
    """Adds the running job's ``job_id``, ``task``, ``queue`` and ``attempt`` to each record
    logged in its context (a field the log call passed in ``extra`` is kept as given).
    Attached to the handler, so records of every logger are covered; it never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job.get(None)
        if job is not None:
            fields = vars(record)
            fields.setdefault("job_id", str(job.id))
            fields.setdefault("task", job.func)
            fields.setdefault("queue", job.queue)
            fields.setdefault("attempt", job.attempts)
            fields[_IN_JOB] = True
        return True


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, and the job's context at the end of a line logged while it runs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if getattr(record, _IN_JOB, False):
            context = f" [job={record.job_id} task={record.task} attempt={record.attempt}]"  # type: ignore[attr-defined]
            # Before a traceback, if any, so the context stays on the message's line.
            first, newline, rest = line.partition("\n")
            line = first + context + newline + rest
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, the
    ``extra`` fields, and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extra_fields(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(level: str | int | None = None, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log line (Chancy's and the tasks') to ``stream`` (stderr) at ``level``
    (default: ``CHANCY_LOG_LEVEL``, else INFO), replacing handlers set up before."""
    level = level or os.environ.get("CHANCY_LOG_LEVEL") or "INFO"
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        level = level.upper()
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # psycopg's pool logs every reconnect attempt at INFO; keep it to warnings unless debugging.
    logging.getLogger("psycopg.pool").setLevel(max(logging.WARNING, root.level))
