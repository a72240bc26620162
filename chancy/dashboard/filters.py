"""The job list's filter, read from a query string and checked before it reaches SQL
(where every value is a parameter anyway): a bad value is a clear 400, never a guess."""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlencode

from chancy.job import JobState

MAX_PAGE = 200
DEFAULT_PAGE = 50


class BadRequest(ValueError):
    """A request parameter is malformed; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class JobFilter:
    states: tuple[str, ...] = ()
    queue: str | None = None
    task: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: tuple[datetime, uuid.UUID] | None = None
    newer: bool = False
    limit: int = DEFAULT_PAGE

    @classmethod
    def from_query(cls, params: Mapping[str, Any]) -> "JobFilter":
        """From ``state`` (repeatable or comma-separated), ``queue``, ``task``, ``q`` (text
        in the arguments), ``since``/``until`` (ISO times), ``older``/``newer`` (cursors
        from a previous page) and ``limit``."""
        getlist = getattr(params, "getlist", None)
        raw_states = getlist("state") if getlist else [params.get("state") or ""]
        states = tuple(s.strip() for value in raw_states for s in value.split(",") if s.strip())
        valid = {s.value for s in JobState}
        unknown = [s for s in states if s not in valid]
        if unknown:
            raise BadRequest(f"Unknown state {unknown[0]!r}: use one of {', '.join(sorted(valid))}")
        older, newer = _text(params, "older"), _text(params, "newer")
        if older and newer:
            raise BadRequest("Give either 'older' or 'newer', not both")
        return cls(
            states=states, queue=_text(params, "queue"), task=_text(params, "task"), text=_text(params, "q"),
            since=_time(params, "since"), until=_time(params, "until"),
            cursor=_parse_cursor(older or newer) if (older or newer) else None, newer=bool(newer),
            limit=_limit(params.get("limit")),
        )

    def as_params(self) -> dict[str, str]:
        """The filter (without paging) as query parameters, for links to other pages."""
        params = {"state": ",".join(self.states), "queue": self.queue or "", "task": self.task or "",
                  "q": self.text or "", "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else ""}
        if self.limit != DEFAULT_PAGE:
            params["limit"] = str(self.limit)
        return {k: v for k, v in params.items() if v}

    def link(self, **paging: str) -> str:
        return "?" + urlencode({**self.as_params(), **paging})


def _text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or not str(value).strip():
        return None
    if len(value) > 500:
        raise BadRequest(f"'{key}' is too long (at most 500 characters)")
    return str(value).strip()


def _time(params: Mapping[str, Any], key: str) -> datetime | None:
    value = _text(params, key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{key}' must be an ISO 8601 time such as 2026-01-31T14:00, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _parse_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, job_id = value.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except ValueError:
        raise BadRequest("The page cursor is malformed: follow the 'older'/'newer' links as given") from None


def _limit(value: Any) -> int:
    return positive_number(value, "limit", int, maximum=MAX_PAGE) or DEFAULT_PAGE


def positive_number(value: Any, name: str, kind: type[int] | type[float], maximum: float | None = None) -> Any:
    """``value`` as a positive, finite int or float (at most ``maximum``); None if blank."""
    if value in (None, ""):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{name!r} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0 or (maximum is not None and number > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise BadRequest(f"{name!r} must be positive{upper}, got {value!r}")
    return number


def parse_job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{value[:60]!r} is not a job id (a UUID)") from None
