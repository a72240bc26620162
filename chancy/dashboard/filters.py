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
MAX_TEXT = 500
#: What a Postgres ``integer`` column (concurrency, rate limit) holds.
MAX_INTEGER = 2**31 - 1
#: The longest pause or rate-limit period accepted (ten years): far inside what a
#: ``timedelta`` and an ``interval`` hold, so a huge number is a 400, not an overflow.
MAX_SECONDS = 10 * 365 * 86400


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
            raise BadRequest(f"Unknown state {unknown[0][:40]!r}: use one of {', '.join(sorted(valid))}")
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


def text(value: Any, name: str) -> str | None:
    """A text parameter, stripped; None if absent or blank. Postgres text cannot hold a
    NUL character, so one is a 400 here rather than an error from the database."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if "\x00" in value:
        raise BadRequest(f"{name!r} must not contain NUL characters")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name!r} is too long (at most {MAX_TEXT} characters)")
    return value


def _text(params: Mapping[str, Any], key: str) -> str | None:
    return text(params.get(key), key)


def _time(params: Mapping[str, Any], key: str) -> datetime | None:
    value = _text(params, key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{key}' must be an ISO 8601 time such as 2026-01-31T14:00, got {value[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _parse_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, job_id = value.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except ValueError:
        raise BadRequest("The page cursor is malformed: follow the 'older'/'newer' links as given") from None


def _limit(value: Any) -> int:
    return positive_number(value, "limit", int, maximum=MAX_PAGE) or DEFAULT_PAGE


def positive_number(value: Any, name: str, kind: type[int] | type[float], maximum: int) -> Any:
    """``value`` as a positive, finite int or float, at most ``maximum``; None if blank."""
    if value in (None, ""):
        return None
    shown = repr(value)[:40]
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{name!r} must be a {'whole ' if kind is int else ''}number, got {shown}") from None
    if number > maximum or not math.isfinite(number) or number <= 0:  # a huge int overflows isfinite
        raise BadRequest(f"{name!r} must be positive and at most {maximum}, got {shown}")
    return number


def parse_job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{value[:60]!r} is not a job id (a UUID)") from None
