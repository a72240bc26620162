"""Logging for Chancy processes: one call sets the level and the format of every log line.

``text`` is for a terminal (time, level, logger, message); ``json`` is one object per line
for log shippers, carrying the fields a log call passes in ``extra`` (the worker's job
lines carry ``job_id``, ``task``, ``queue``, ``attempt``, ``outcome`` and ``duration``)."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")}


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
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # psycopg's pool logs every reconnect attempt at INFO; keep it to warnings unless debugging.
    logging.getLogger("psycopg.pool").setLevel(max(logging.WARNING, root.level))
