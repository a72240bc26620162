"""The Celery result backend's saved groups and chord counters (``sql/celery_chords.sql``,
tables of migration 6): what Celery's key-value backends keep in keys, kept in Postgres
rows. How a chord is counted and its body claimed exactly once: see the SQL file."""

from __future__ import annotations

import dataclasses
from typing import Any

from chancy.migrations import Names
from chancy.store.pg.statements import SqlFile, Statement

#: ``position`` of a part sent without a group index (Redis sorts those last too).
UNINDEXED_POSITION = 2**62


@dataclasses.dataclass(frozen=True)
class PartReturn:
    """What one header part's return found: the parts returned and the chord's size
    (``None``: unknown yet), whether the body was already sent, and whether this caller
    now holds the claim to send it."""

    done: int
    total: int | None
    fired: bool
    claimed: bool


def _part_return(rows: list[tuple]) -> PartReturn | None:
    if not rows:
        return None
    done, total, fired, claimed = rows[0]
    return PartReturn(done=done, total=total, fired=bool(fired), claimed=bool(claimed))


def _payload(rows: list[tuple]) -> bytes | None:
    return bytes(rows[0][0]) if rows else None


def _payloads(rows: list[tuple]) -> list[bytes]:
    return [bytes(row[0]) for row in rows]


class ChordSQL:
    """Statements on the saved-group and chord tables of one prefix."""

    def __init__(self, names: Names) -> None:
        self._statements = SqlFile("celery_chords.sql", names.fields())

    def save_group(self, group_id: str, payload: bytes, expires: float | None) -> list[Statement]:
        return [Statement(self._statements["save_group"], {"id": group_id, "payload": payload, "expires": expires}),
                Statement(self._statements["prune_groups"], {})]

    def restore_group(self, group_id: str) -> Statement:
        return Statement(self._statements["restore_group"], {"id": group_id}, _payload)

    def delete_group(self, group_id: str) -> Statement:
        return Statement(self._statements["delete_group"], {"id": group_id})

    def start_chord(self, group_id: str) -> Statement:
        return Statement(self._statements["start_chord"], {"id": group_id})

    def set_size(self, group_id: str, size: int) -> Statement:
        return Statement(self._statements["set_size"], {"id": group_id, "size": size})

    def add_to_chord(self, group_id: str, count: int = 1) -> Statement:
        return Statement(self._statements["add"], {"id": group_id, "count": count})

    def ensure_chord(self, group_id: str) -> Statement:
        return Statement(self._statements["ensure_chord"], {"id": group_id})

    def part_return(self, group_id: str, task_id: str, position: int, payload: bytes,
                    fallback_size: int | None, token: str, lease: float) -> Statement:
        params: dict[str, Any] = {"id": group_id, "task_id": task_id, "position": position, "payload": payload,
                                  "fallback_size": fallback_size, "token": token, "lease": lease}
        return Statement(self._statements["part_return"], params, _part_return)

    def parts(self, group_id: str) -> Statement:
        return Statement(self._statements["parts"], {"id": group_id}, _payloads)

    def fired(self, group_id: str, token: str, keep: float) -> Statement:
        return Statement(self._statements["fired"], {"id": group_id, "token": token, "keep": keep})
