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
from chancy.store.admin import BulkAction, JobSelection

MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_TEXT = 500
#: The most job ids one "selected jobs" bulk action names (the largest page, several times).
MAX_SELECTED = 1000
#: The filter fields of the job list, which a bulk action over "all matching" repeats.
FILTER_FIELDS = ("state", "queue", "task", "q", "since", "until")
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
        cursor = older or newer
        return cls(
            states=states, queue=_text(params, "queue"), task=_text(params, "task"), text=_text(params, "q"),
            since=_time(params, "since"), until=_time(params, "until"),
            cursor=_parse_cursor(cursor) if cursor else None, newer=bool(newer),
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

    @property
    def is_empty(self) -> bool:
        return not (self.states or self.queue or self.task or self.text or self.since or self.until)

    def selection(self) -> JobSelection:
        """The jobs this filter lists, for a bulk action (the same matching as the list)."""
        return JobSelection(states=tuple(JobState(s) for s in self.states), queues=(self.queue,) if self.queue else (),
                            task_contains=self.task, text=self.text, since=self.since, until=self.until)


@dataclasses.dataclass(frozen=True)
class BulkRequest:
    """A bulk action's input: ``ids`` (the jobs ticked), or every job matching the list's
    filter (``scope=matching``: the filter fields, or ``filter`` as an object in JSON;
    matching everything needs ``all``), with ``dry_run`` and ``force`` (delete waiting jobs)."""

    action: BulkAction
    selection: JobSelection
    filter: JobFilter
    ids: tuple[uuid.UUID, ...]
    dry_run: bool
    force: bool

    @classmethod
    def parse(cls, action: str, data: Mapping[str, Any]) -> "BulkRequest":
        try:
            verb = BulkAction(action)
        except ValueError:
            raise BadRequest(f"Unknown bulk action {action[:40]!r}: use retry, cancel or delete") from None
        raw_filter = data.get("filter", {k: data[k] for k in FILTER_FIELDS if k in data})
        if not isinstance(raw_filter, Mapping):
            raise BadRequest(
                "'filter' must be an object of the job list's filters (state, queue, task, q, since, until)")
        fields = {k: v for k, v in raw_filter.items() if k in FILTER_FIELDS}
        states = fields.get("state")
        if isinstance(states, list):  # JSON may list the states
            if not all(isinstance(state, str) for state in states):
                raise BadRequest("'state' must be a state name or a list of them")
            fields["state"] = ",".join(states)
        elif states is not None and not isinstance(states, str):
            raise BadRequest("'state' must be a state name or a list of them")
        query = JobFilter.from_query(fields)
        ids = _ids(data.get("ids"))
        scope = data.get("scope", "selected" if ids else "matching")
        if scope not in ("selected", "matching"):
            raise BadRequest(
                f"'scope' must be 'selected' (the ids given) or 'matching' (the filter), got {repr(scope)[:40]}")
        if scope == "selected":
            if not ids:
                raise BadRequest("No jobs are selected: tick some, or choose all jobs matching the filter")
            selection = JobSelection(ids=ids)
        else:
            if query.is_empty and not flag(data.get("all"), "all"):
                raise BadRequest("Acting on every job needs 'all' set: otherwise filter the list first")
            selection, ids = query.selection(), ()
        return cls(verb, selection, query, ids, flag(data.get("dry_run"), "dry_run"), flag(data.get("force"), "force"))


def flag(value: Any, name: str) -> bool:
    """A boolean from JSON (true/false) or a form ("1", "on", "true", or absent)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("", "0", "false", "off", "no", "1", "true", "on", "yes"):
        return value.strip().lower() in ("1", "true", "on", "yes")
    raise BadRequest(f"{name!r} must be true or false, got {repr(value)[:40]}")


def _ids(value: Any) -> tuple[uuid.UUID, ...]:
    if value in (None, "", []):
        return ()
    values = value.split(",") if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest("'ids' must be a list of job ids")
    if len(values) > MAX_SELECTED:
        raise BadRequest(
            f"At most {MAX_SELECTED} jobs can be selected by id: choose all jobs matching a filter instead")
    return tuple(dict.fromkeys(parse_job_id(v.strip()) for v in values if v.strip()))


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
