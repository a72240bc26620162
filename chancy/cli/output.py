"""Printing: aligned plain-text tables for people, JSON for scripts, and one JSON shape
for a job wherever it appears."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import datetime
from typing import Any, Callable, Sequence, TypeVar

import click

from chancy.job import JobRecord
from chancy.redaction import redact

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return repr(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_plain, indent=2, sort_keys=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False
               for i in range(len(headers))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        cells_of_row = zip(row, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in cells_of_row).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def print_listing(items: Sequence[T], as_json: bool, *, to_json: Callable[[T], Any], empty: str,
                  headers: Sequence[str], row: Callable[[T], Sequence[Any]]) -> None:
    """What every list command prints: JSON objects, or ``empty`` when there is nothing,
    or a table of one row per item."""
    if as_json:
        emit_json([to_json(item) for item in items])
    elif not items:
        click.echo(empty)
    else:
        click.echo(table(headers, [row(item) for item in items]))


def age(seconds: float | None) -> str:
    """``4s``, ``3m12s``, ``2h05m``: a heartbeat age at a glance."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def span(seconds: float) -> str:
    """A window length the way people say it: ``24h``, ``90m``, ``45s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def safe_dsn(dsn: str) -> str:
    """The DSN with its password masked, fit to print (even when it is malformed)."""
    return redact(dsn)


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def job_dict(record: JobRecord) -> dict[str, Any]:
    """A job as JSON-ready data (every column)."""
    data = dataclasses.asdict(record)
    data["limits"] = [limit.to_dict() for limit in record.limits]
    data["backoff"] = record.backoff.to_dict() if record.backoff else None
    return json.loads(json.dumps(data, default=_plain))
