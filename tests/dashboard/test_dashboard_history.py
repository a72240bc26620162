"""The overview's per-minute history reads only what can still change."""

from __future__ import annotations

from datetime import datetime, timezone

from chancy.dashboard.history import FinishedHistory


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 1, 1, hh, mm, ss, tzinfo=timezone.utc)


async def test_closed_minutes_are_kept_and_not_read_again():
    rows = {at(10, 0).timestamp(): 7, at(10, 1).timestamp(): 3, at(10, 2).timestamp(): 1}
    asked: list[datetime] = []

    def statement(start: datetime, bucket: float) -> datetime:
        asked.append(start)
        return start

    async def run(start: datetime) -> list[tuple]:  # the table, as the statement would read it
        return [(minute, "default", "succeeded", n) for minute, n in rows.items() if minute >= start.timestamp()]

    history = FinishedHistory(span=3600, bucket=60, lag=5)
    first = await history.read(at(10, 2, 30), run, statement)
    assert asked == [at(9, 3)]  # the first read covers the whole hour
    assert first[at(10, 0).timestamp()] == {("default", "succeeded"): 7}

    rows.clear()  # say the pruner deleted those rows: closed minutes keep their counts
    rows[at(10, 2).timestamp()] = 4
    later = await history.read(at(10, 3, 10), run, statement)
    assert asked[-1] == at(10, 2)  # only the minute that was still open is read again
    assert later[at(10, 0).timestamp()] == {("default", "succeeded"): 7}
    assert later[at(10, 1).timestamp()] == {("default", "succeeded"): 3}
    assert later[at(10, 2).timestamp()] == {("default", "succeeded"): 4}

    much_later = await history.read(at(11, 1, 30), run, statement)
    assert at(10, 0).timestamp() not in much_later and at(10, 2).timestamp() in much_later
