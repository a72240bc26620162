"""Cron schedules: exactly-once firing under concurrent leaders, catch-up of missed ticks,
time zones, expiry of firings, and the schedule API's validation."""

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import cluster_tasks
import pytest

from chancy import Chancy, ConfigurationError, Job
from chancy.plugins.cron import Cron
from chancy.store.of_app import cluster_of


async def _fire(app, catch_up=timedelta(minutes=5)):
    """One firing pass on a seat of its own that does not lead (as a second firer would)."""
    seat = await cluster_of(app).schedules.firing(app.namespace)
    try:
        return await seat.fire_due(catch_up)
    finally:
        await seat.close()


async def _set_next_fire(app, name, seconds_ago):
    async with app.store.connection() as conn:
        await conn.execute("UPDATE chancy_cron SET next_fire_at = date_trunc('second', now()) "
                           "- make_interval(secs => %s) WHERE name = %s", (seconds_ago, name))


async def _firings(app):
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT unique_key, expires_at, args::text FROM chancy_jobs ORDER BY unique_key")
        return await cur.fetchall()


async def test_concurrent_leaders_push_each_tick_once(make_app):
    app = await make_app()
    await Cron.schedule(app, "tick", Job(cluster_tasks.noop, args=[0]), every=10)
    await _set_next_fire(app, "tick", 95)  # 10 due ticks, the next one 5 s ahead
    counts = await asyncio.gather(*(_fire(app) for _ in range(4)))
    assert sum(counts) == 10
    keys = [row[0] for row in await _firings(app)]
    assert len(keys) == len(set(keys)) == 10
    assert await _fire(app) == 0  # nothing is due any more


async def test_ticks_older_than_catch_up_are_skipped(make_app):
    app = await make_app()
    await Cron.schedule(app, "tick", Job(cluster_tasks.noop, args=[0]), every=1)
    await _set_next_fire(app, "tick", 100)
    assert await _fire(app, catch_up=timedelta(seconds=3)) in (3, 4)
    [schedule] = await Cron.schedules(app)
    assert schedule.next_fire_at > datetime.now(timezone.utc) - timedelta(seconds=1)


async def test_cron_expression_in_a_time_zone_and_expiry_of_firings(make_app):
    app = await make_app()
    await Cron.schedule(app, "seven", Job(cluster_tasks.noop, args=[7]), cron="0 7 * * *",
                        timezone="Europe/Paris", expires_in=30)
    [schedule] = await Cron.schedules(app)
    local = schedule.next_fire_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (7, 0)
    assert schedule.job.args == (7,)
    # Make it due and fire it: the firing expires 30 s after its tick.
    async with app.store.connection() as conn:
        await conn.execute("UPDATE chancy_cron SET next_fire_at = next_fire_at - interval '1 day'")
    assert await _fire(app, catch_up=timedelta(days=2)) == 1
    [(key, expires_at, _)] = await _firings(app)
    tick = datetime.fromisoformat(key.split(":", 2)[2])
    assert expires_at - tick == timedelta(seconds=30)
    assert (await Cron.schedules(app))[0].next_fire_at == schedule.next_fire_at


async def test_rescheduling_keeps_the_next_tick_unless_the_timing_changes(make_app):
    app = await make_app()
    job = Job(cluster_tasks.noop, args=[1])
    await Cron.schedule(app, "s", job, every=3600)
    first = (await Cron.schedules(app))[0].next_fire_at
    await Cron.schedule(app, "s", job.with_options(args=[2]), every=3600)
    [kept] = await Cron.schedules(app)
    assert kept.next_fire_at == first and kept.job.args == (2,)
    Cron.schedule_sync(app, "s", job, every=60)
    [changed] = Cron.schedules_sync(app)
    assert changed.next_fire_at < first and changed.every == 60
    await Cron.unschedule(app, "s")
    assert await Cron.schedules(app) == []


@pytest.mark.parametrize("options, message", [
    (dict(), "exactly one"),
    (dict(cron="* * * * *", every=5), "exactly one"),
    (dict(cron="every day"), "not a valid cron"),
    (dict(every=0), "positive"),
    (dict(every=5, timezone="Mars/Olympus"), "time zone"),
    (dict(every=5, expires_in=-1), "expires_in"),
])
async def test_bad_schedules_are_refused(make_app, options, message):
    app = await make_app()
    with pytest.raises(ConfigurationError, match=message):
        await Cron.schedule(app, "bad", Job(cluster_tasks.noop, args=[0]), **options)
    with pytest.raises(ConfigurationError, match="must not set unique_key"):
        await Cron.schedule(app, "bad", Job(cluster_tasks.noop, unique_key="k"), every=5)
    assert await Cron.schedules(app) == []


async def test_a_firer_stops_when_cancelled_whatever_it_is_doing(dsn):
    """Cancelled at any moment (here 60 times, at moments spread over its passes), a firer
    stops. A pass ran under asyncio.wait_for, which on Python 3.11 swallows a cancellation
    that arrives as its awaitable finishes: the firer went on firing, and whatever awaited
    it (a worker's shutdown, this suite) hung. Before: 1 of 60 ignored its cancel."""
    app = Chancy(dsn, namespace="stress")
    await app.migrate()
    await Cron.schedule(app, "tick", Job("x.y"), every=0.01)
    ignored = 0
    try:
        for i in range(60):
            firer = asyncio.ensure_future(Cron(interval=0.001).fire_forever(app))
            await asyncio.sleep(0.005 + (i % 10) * 0.003)
            firer.cancel()
            done, _ = await asyncio.wait([firer], timeout=3)
            if not done:
                ignored += 1
                firer.cancel()
                await asyncio.wait([firer], timeout=3)
    finally:
        await app.close()
    assert ignored == 0
