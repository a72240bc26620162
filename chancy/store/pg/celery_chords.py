"""The SQL of the Celery result backend's saved groups and chord counters (tables of
migration 6): what Celery's key-value backends keep in keys, kept in Postgres rows.

A chord's row is created (or reset, for a frozen chord applied again) before any header
part is sent. Each header part's return inserts its outcome once per (task id, index)
and raises ``done`` in the same statement; the row lock of that UPDATE serialises
concurrent parts, so exactly one of them sees the chord complete and claims its body.
A claim lasts ``lease`` seconds: a part run again after the claimer died (redelivered
after a lost worker) takes the claim over once it lapsed, so a crash cannot strand the
body; ``fired_at`` then makes every later return a no-op."""

from __future__ import annotations

import dataclasses
from typing import Any

from psycopg import sql

from chancy.migrations import Names
from chancy.store.pg.statements import ready, Statement

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
        f = names.fields()
        self._save_group = ready(sql.SQL(
            "INSERT INTO {celery_groups} (id, payload, expires_at) "
            "VALUES (%(id)s, %(payload)s, now() + make_interval(secs => %(expires)s)) "
            "ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at"
        ).format(**f))
        self._prune_groups = ready(sql.SQL(
            "DELETE FROM {celery_groups} WHERE expires_at < now()"
        ).format(**f))
        self._restore_group = ready(sql.SQL(
            "SELECT payload FROM {celery_groups} WHERE id = %(id)s AND (expires_at IS NULL OR expires_at >= now())"
        ).format(**f))
        self._delete_group = ready(sql.SQL("DELETE FROM {celery_groups} WHERE id = %(id)s").format(**f))
        # A chord applied again under the same (frozen) group id is a new run.
        self._start_chord = ready(sql.SQL(
            """
            WITH started AS (
                INSERT INTO {celery_chords} AS c (group_id) VALUES (%(id)s)
                ON CONFLICT (group_id) DO UPDATE SET size = NULL, added = 0, done = 0, claim = NULL,
                    claimed_until = NULL, fired_at = NULL, created_at = now()
                RETURNING group_id
            )
            DELETE FROM {celery_chord_parts} WHERE group_id = (SELECT group_id FROM started)
            """
        ).format(**f))
        self._set_size = ready(sql.SQL(
            "INSERT INTO {celery_chords} AS c (group_id, size) VALUES (%(id)s, %(size)s) "
            "ON CONFLICT (group_id) DO UPDATE SET size = EXCLUDED.size"
        ).format(**f))
        self._add = ready(sql.SQL(
            "INSERT INTO {celery_chords} AS c (group_id, added) VALUES (%(id)s, %(count)s) "
            "ON CONFLICT (group_id) DO UPDATE SET added = c.added + EXCLUDED.added"
        ).format(**f))
        self._ensure_chord = ready(sql.SQL(
            "INSERT INTO {celery_chords} (group_id) VALUES (%(id)s) ON CONFLICT (group_id) DO NOTHING"
        ).format(**f))
        # ``fallback_size``: the size the part's own request carries, for a chord whose
        # size was never set. The part is not recorded once the body was sent. SET reads
        # only ``c``: under a concurrent part's update Postgres re-reads the locked row
        # for it (a value computed beforehand in a CTE would lose that part's count).
        claimable = sql.SQL(
            "c.done + (SELECT count(*) FROM part) >= COALESCE(c.size, %(fallback_size)s) + c.added "
            "AND c.fired_at IS NULL AND (c.claim IS NULL OR c.claimed_until < now() OR c.claim = %(token)s)"
        )
        self._part_return = ready(sql.SQL(
            """
            WITH part AS (
                INSERT INTO {celery_chord_parts} (group_id, task_id, position, payload)
                SELECT %(id)s, %(task_id)s, %(position)s, %(payload)s
                WHERE NOT EXISTS (SELECT 1 FROM {celery_chords} WHERE group_id = %(id)s AND fired_at IS NOT NULL)
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            UPDATE {celery_chords} c SET
                done = c.done + (SELECT count(*) FROM part),
                claim = CASE WHEN {claimable} THEN %(token)s ELSE c.claim END,
                claimed_until = CASE WHEN {claimable} THEN now() + make_interval(secs => %(lease)s)
                                     ELSE c.claimed_until END
            WHERE c.group_id = %(id)s
            RETURNING c.done, COALESCE(c.size, %(fallback_size)s) + c.added, c.fired_at IS NOT NULL,
                      c.claim IS NOT DISTINCT FROM %(token)s
            """
        ).format(claimable=claimable, **f))
        self._parts = ready(sql.SQL(
            "SELECT payload FROM {celery_chord_parts} WHERE group_id = %(id)s ORDER BY position, task_id"
        ).format(**f))
        # The body was sent (or the chord failed): later returns change nothing. Parts
        # are dropped, and chords that fired longer ago than ``keep`` seconds pruned.
        self._fired = ready(sql.SQL(
            """
            WITH fired AS (
                UPDATE {celery_chords} SET fired_at = now(), claim = NULL, claimed_until = NULL
                WHERE group_id = %(id)s AND claim = %(token)s
                RETURNING group_id
            ),
            dropped AS (
                DELETE FROM {celery_chord_parts} WHERE group_id IN (SELECT group_id FROM fired)
            )
            DELETE FROM {celery_chords} WHERE fired_at < now() - make_interval(secs => %(keep)s)
            """
        ).format(**f))

    def save_group(self, group_id: str, payload: bytes, expires: float | None) -> list[Statement]:
        return [Statement(self._save_group, {"id": group_id, "payload": payload, "expires": expires}),
                Statement(self._prune_groups, {})]

    def restore_group(self, group_id: str) -> Statement:
        return Statement(self._restore_group, {"id": group_id}, _payload)

    def delete_group(self, group_id: str) -> Statement:
        return Statement(self._delete_group, {"id": group_id})

    def start_chord(self, group_id: str) -> Statement:
        return Statement(self._start_chord, {"id": group_id})

    def set_size(self, group_id: str, size: int) -> Statement:
        return Statement(self._set_size, {"id": group_id, "size": size})

    def add_to_chord(self, group_id: str, count: int = 1) -> Statement:
        return Statement(self._add, {"id": group_id, "count": count})

    def ensure_chord(self, group_id: str) -> Statement:
        return Statement(self._ensure_chord, {"id": group_id})

    def part_return(self, group_id: str, task_id: str, position: int, payload: bytes,
                    fallback_size: int | None, token: str, lease: float) -> Statement:
        params: dict[str, Any] = {"id": group_id, "task_id": task_id, "position": position, "payload": payload,
                                  "fallback_size": fallback_size, "token": token, "lease": lease}
        return Statement(self._part_return, params, _part_return)

    def parts(self, group_id: str) -> Statement:
        return Statement(self._parts, {"id": group_id}, _payloads)

    def fired(self, group_id: str, token: str, keep: float) -> Statement:
        return Statement(self._fired, {"id": group_id, "token": token, "keep": keep})
