"""One schedule contract, every store: each test runs on the Postgres schedules
(:class:`chancy.store.pg.schedules.PgSchedules`, a fresh database) and on the in-memory
ones (:class:`chancy.store.memory_schedules.MemorySchedules`), with the same expectations
(:class:`chancy.store.schedules.ScheduleStore` says what they are).

What Postgres keeps in SQL (``sql/schedules.sql``, by statement) and memory in Python,
each pair proven to agree by the tests named:

- ``upsert``: a replaced schedule keeps its next tick unless its timing changed:
  ``test_upsert_*``.
- ``delete_others`` (after ``upsert``) in one transaction: ``test_replace_*``.
- every statement's ``namespace = …``: ``test_namespaces_*``.
- ``due`` (locked, skipped by a second firer) and ``advance`` (only if not advanced since
  read): ``test_two_firers_*``.
- ``try_lead`` (the advisory lock): ``test_one_seat_*``.
- ``due``'s ``enabled``, ``wait``: ``test_disabled_*``, ``test_until_next_*``.

The tick rules themselves (missed ticks, catch_up, keys) are one Python module for both
(:mod:`chancy.store.schedule_rules`): ``test_missed_*``, ``test_catch_up_*``,
``test_firings_*`` prove each store applies them with its own clock.

Only Postgres adopts schedules stored before namespaces (``adopt``):
tests/cluster/test_cron_namespaces.py covers it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chancy import Chancy, ConfigurationError, Job, Queue
from chancy.job import JobRecord, JobState
from chancy.store.memory import MemoryQueue
from chancy.store.memory_schedules import MemorySchedules
from chancy.store.pg.schedules import PgSchedules
from chancy.store.schedules import Firing, ScheduleStore, Spec
from chancy.testing import pushed_jobs

TASK = "contract.cron"
NS = "default"
CLOCK_SLACK = timedelta(seconds=2)


@dataclasses.dataclass
class Subject:
    """One schedule store under test, with the app its firings are pushed into."""

    kind: str
    app: Chancy
    schedules: ScheduleStore

    async def make_due(self, name: str, seconds_ago: float, namespace: str = NS) -> None:
        """Set the schedule's next tick ``seconds_ago`` before now (on a whole second), as
        if its firer had been away."""
        if isinstance(self.schedules, MemorySchedules):
            now = datetime.now(timezone.utc).replace(microsecond=0)
            rows = self.schedules._rows
            rows[(namespace, name)] = dataclasses.replace(
                rows[(namespace, name)], next_fire_at=now - timedelta(seconds=seconds_ago))
            return
        async with self.app.store.connection() as conn:
            await conn.execute("UPDATE chancy_cron SET next_fire_at = date_trunc('second', now()) "
                               "- make_interval(secs => %s) WHERE namespace = %s AND name = %s",
                               (seconds_ago, namespace, name))

    def firings(self) -> list[JobRecord]:
        """The jobs pushed, by unique key."""
        return sorted(pushed_jobs(self.app), key=lambda r: r.unique_key or "")


@pytest.fixture(params=["postgres", "memory"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "postgres":
        app = Chancy(request.getfixturevalue("dsn"), plugins=[Queue("default")])
        await app.migrate()
        schedules: ScheduleStore = PgSchedules(app.store)
    else:
        app = Chancy(plugins=[MemoryQueue("default")])
        schedules = MemorySchedules(app)
    try:
        yield Subject(request.param, app, schedules)
    finally:
        await app.close()


def spec(name: str = "tick", n: int = 0, **timing: Any) -> Spec:
    """A schedule of TASK(n), every 10 s unless ``timing`` says otherwise."""
    return Spec(name, Job(TASK, args=[n]), **(timing or {"every": 10}))


def now() -> datetime:
    return datetime.now(timezone.utc)


def tick_of(record: JobRecord) -> datetime:
    assert record.unique_key is not None
    return datetime.fromisoformat(record.unique_key.split(":", 2)[2].split("@")[0])


# --- storing ----------------------------------------------------------------------------------------
async def test_upsert_stores_each_field_and_reads_back_a_fresh_job(subject: Subject) -> None:
    template = Job(TASK, args=[1, (2, 3)], kwargs={"at": datetime(2020, 1, 2, tzinfo=timezone.utc)},
                   queue="default", priority=4, max_attempts=3, meta={"m": 1})
    before = now()
    await subject.schedules.upsert(NS, [Spec("report", template, cron="0 7 * * *", timezone="Europe/Paris",
                                             expires_in=30, enabled=False)])
    [stored] = await subject.schedules.list(NS)
    assert (stored.namespace, stored.name, stored.cron, stored.every, stored.timezone) == (
        NS, "report", "0 7 * * *", None, "Europe/Paris")
    assert (stored.expires_in, stored.enabled, stored.last_fired_at) == (30, False, None)
    assert stored.job == Job(TASK, args=[1, [2, 3]], kwargs={"at": datetime(2020, 1, 2, tzinfo=timezone.utc)},
                             queue="default", priority=4, max_attempts=3, meta={"m": 1})
    local = stored.next_fire_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (7, 0) and before < stored.next_fire_at <= before + timedelta(days=1)
    assert before - CLOCK_SLACK <= stored.read_at <= now() + CLOCK_SLACK


async def test_upsert_keeps_the_next_tick_of_an_unchanged_timing(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [spec("s", 1, every=3600)])
    [first] = await subject.schedules.list(NS)
    await subject.schedules.upsert(NS, [spec("s", 2, every=3600)])
    [kept] = await subject.schedules.list(NS)
    assert kept.next_fire_at == first.next_fire_at and kept.job.args == (2,)
    subject.schedules.upsert_sync(NS, [spec("s", 2, every=60)])
    [changed] = subject.schedules.list_sync(NS)
    assert changed.next_fire_at < first.next_fire_at and changed.every == 60


async def test_upsert_checks_every_spec_before_storing_any(subject: Subject) -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        await subject.schedules.upsert(NS, [spec("good"), Spec("bad", Job(TASK))])
    with pytest.raises(ConfigurationError, match="must not set unique_key"):
        subject.schedules.upsert_sync(NS, [Spec("bad", Job(TASK, unique_key="k"), every=5)])
    assert await subject.schedules.list(NS) == []


async def test_delete_forgets_one_schedule(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [spec("a"), spec("b")])
    await subject.schedules.delete(NS, "a")
    subject.schedules.delete_sync(NS, "missing")
    assert [s.name for s in subject.schedules.list_sync(NS)] == ["b"]


async def test_replace_makes_the_prefix_exactly_the_set_and_leaves_others(subject: Subject) -> None:
    store = subject.schedules
    await store.replace(NS, "celery:", [spec("celery:tick", 1), spec("celery:gone", 1)])
    await store.upsert(NS, [spec("native", 1)])
    [tick] = [s for s in await store.list(NS) if s.name == "celery:tick"]
    assert await store.replace(NS, "celery:", [spec("celery:tick", 3)]) == ["celery:tick"]
    listed = {s.name: s for s in await store.list(NS)}
    assert sorted(listed) == ["celery:tick", "native"]
    assert listed["celery:tick"].job.args == (3,) and listed["celery:tick"].next_fire_at == tick.next_fire_at
    assert store.replace_sync(NS, "celery:", []) == []
    assert [s.name for s in await store.list(NS)] == ["native"]


async def test_replace_refuses_a_bad_set_and_changes_nothing(subject: Subject) -> None:
    store = subject.schedules
    await store.replace(NS, "p:", [spec("p:a")])
    with pytest.raises(ConfigurationError, match="not named 'p:'"):
        await store.replace(NS, "p:", [spec("other")])
    with pytest.raises(ConfigurationError, match="unique"):
        await store.replace(NS, "p:", [spec("p:b"), spec("p:b")])
    with pytest.raises(ConfigurationError, match="positive"):
        await store.replace(NS, "p:", [spec("p:b", every=0)])
    assert [s.name for s in await store.list(NS)] == ["p:a"]


async def test_namespaces_see_change_and_fire_only_their_own(subject: Subject) -> None:
    store = subject.schedules
    await store.upsert("appA", [spec("tick", 1, every=60)])
    await store.upsert("appB", [spec("tick", 2, every=60)])
    assert [(s.namespace, s.job.args) for s in await store.list("appA")] == [("appA", (1,))]
    await store.replace("appB", "", [])
    assert await store.list("appB") == [] and len(await store.list("appA")) == 1
    await store.upsert("appB", [spec("tick", 2, every=60)])
    await subject.make_due("tick", 1, "appA")
    await subject.make_due("tick", 1, "appB")
    seat_a = await store.firing("appA")
    seat_b = await store.firing("appB")
    try:
        assert await seat_a.fire_due(timedelta(0)) == 1
        assert await seat_a.fire_due(timedelta(0)) == 0  # appB's due tick is not appA's
        assert await seat_b.fire_due(timedelta(0)) == 1  # the same tick, a key of its own
    finally:
        await seat_a.close()
        await seat_b.close()
    keys = [r.unique_key or "" for r in subject.firings()]
    assert len(keys) == 2 and keys[0].endswith("@appA") and keys[1] == keys[0].replace("@appA", "@appB")


# --- firing ---------------------------------------------------------------------------------------------
async def test_two_firers_push_each_tick_once(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [spec("tick", every=10)])
    await subject.make_due("tick", 95)  # 10 due ticks, the next one 5 s ahead
    seats = [await subject.schedules.firing(NS) for _ in range(2)]  # neither leads: the seat is not the guarantee
    try:
        counts = await asyncio.gather(*(seat.fire_due(timedelta(minutes=5)) for seat in seats))
        assert sum(counts) == 10
        keys = [r.unique_key for r in subject.firings()]
        assert len(keys) == len(set(keys)) == 10
        assert [await seat.fire_due(timedelta(minutes=5)) for seat in seats] == [0, 0]
    finally:
        for seat in seats:
            await seat.close()


async def test_one_seat_leads_a_namespace_until_it_closes(subject: Subject) -> None:
    first, second, other = [await subject.schedules.firing(ns) for ns in (NS, NS, "appB")]
    try:
        assert await first.try_lead() and await first.try_lead()  # held already: still True
        assert not await second.try_lead()
        assert await other.try_lead()  # another namespace's seat is its own
        await first.close()
        assert await eventually_leads(second)
    finally:
        for seat in (first, second, other):
            await seat.close()


async def eventually_leads(seat: Firing) -> bool:
    """Whether the seat leads within 5 s (a closed Postgres session's lock goes once the
    server noticed)."""
    for _ in range(100):
        if await seat.try_lead():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_missed_ticks_collapse_into_one_firing_for_the_latest(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [spec("every-2s", every=2), spec("every-minute", cron="* * * * *")])
    await subject.make_due("every-2s", 601)  # ten minutes of downtime: 300 and 10 missed ticks
    await subject.make_due("every-minute", 601)
    seat = await subject.schedules.firing(NS)
    try:
        assert await seat.fire_due(timedelta(0)) == 2
    finally:
        await seat.close()
    firings = subject.firings()
    assert [r.unique_key.split(":")[1] for r in firings if r.unique_key] == ["every-2s", "every-minute"]
    for record, period in zip(firings, (2, 60), strict=True):
        assert now() - timedelta(seconds=period + 1) < tick_of(record) <= now()  # the latest missed tick
    for schedule in await subject.schedules.list(NS):  # and the grid goes on from it
        fired = next(r for r in firings if f":{schedule.name}:" in (r.unique_key or ""))
        assert schedule.next_fire_at == tick_of(fired) + timedelta(seconds=2 if schedule.every else 60)
        assert schedule.last_fired_at == tick_of(fired)


async def test_catch_up_fires_each_recent_missed_tick(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [spec("tick", every=1)])
    await subject.make_due("tick", 100)
    seat = await subject.schedules.firing(NS)
    try:
        assert await seat.fire_due(timedelta(seconds=3)) in (3, 4)
    finally:
        await seat.close()
    ticks = [tick_of(r) for r in subject.firings()]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))
    [schedule] = await subject.schedules.list(NS)
    assert schedule.next_fire_at == ticks[-1] + timedelta(seconds=1) > now() - timedelta(seconds=1)


async def test_firings_carry_their_key_expiry_and_template(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [Spec("tick", Job(TASK, args=[7], priority=3), every=60, expires_in=30)])
    await subject.schedules.upsert("appB", [Spec("tick", Job(TASK, args=[8]), every=60)])
    await subject.make_due("tick", 1)
    await subject.make_due("tick", 1, "appB")
    seats = [await subject.schedules.firing(ns) for ns in (NS, "appB")]
    try:
        assert [await seat.fire_due(timedelta(0)) for seat in seats] == [1, 1]
    finally:
        for seat in seats:
            await seat.close()
    [mine, theirs] = sorted(subject.firings(), key=lambda r: r.args)
    tick = tick_of(mine)
    assert mine.unique_key == f"cron:tick:{tick.isoformat()}"  # the default namespace's keep their old form
    assert theirs.unique_key == f"cron:tick:{tick.isoformat()}@appB"
    assert (mine.func, mine.args, mine.priority, mine.state) == (TASK, (7,), 3, JobState.PENDING)
    assert mine.expires_at == tick + timedelta(seconds=30) and theirs.expires_at is None


async def test_firings_of_a_tick_whose_job_is_live_push_nothing_new(subject: Subject) -> None:
    """The unique key backs the advance: a tick fired again (its schedule moved back by
    hand, say) finds its job live and pushes no second one."""
    await subject.schedules.upsert(NS, [spec("tick", every=60)])
    await subject.make_due("tick", 1)
    seat = await subject.schedules.firing(NS)
    try:
        assert await seat.fire_due(timedelta(0)) == 1
        await subject.make_due("tick", 1)
        await seat.fire_due(timedelta(0))
    finally:
        await seat.close()
    assert len(subject.firings()) == 1


async def test_disabled_schedules_do_not_fire_nor_count_for_until_next(subject: Subject) -> None:
    await subject.schedules.upsert(NS, [Spec("off", Job(TASK), every=1, enabled=False)])
    await subject.make_due("off", 5)
    seat = await subject.schedules.firing(NS)
    try:
        assert await seat.fire_due(timedelta(minutes=1)) == 0
        assert await seat.until_next() is None
    finally:
        await seat.close()
    assert subject.firings() == []


async def test_until_next_is_the_wait_for_the_next_due_schedule(subject: Subject) -> None:
    seat = await subject.schedules.firing(NS)
    try:
        assert await seat.until_next() is None
        await subject.schedules.upsert(NS, [spec("slow", every=3600), spec("fast", every=60)])
        assert 55 < (await seat.until_next() or 0) <= 60
        await subject.make_due("fast", 10)
        assert -12 < (await seat.until_next() or 0) <= -9  # overdue
        await subject.schedules.upsert("appB", [spec("sooner", every=1)])
        assert (await seat.until_next() or 0) < 0  # another namespace's does not count
    finally:
        await seat.close()
