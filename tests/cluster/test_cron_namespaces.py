"""Schedules belong to their app's namespace (issue 25): apps sharing a database schedule,
list, replace and fire only their own; alike names do not collide; missed ticks collapse
into one firing; one firer per namespace; migration 5 keeps a live database's schedules."""

import asyncio
from datetime import datetime, timedelta

import cluster_tasks
import pytest

from chancy import Chancy, ConfigurationError, Job
from chancy.compat import Celery
from chancy.compat.beat import sync_schedule
from chancy.plugins.cron import Cron, Spec
from chancy.store.of_app import cluster_of


def _job(n: int) -> Job:
    return Job(cluster_tasks.noop, args=[n])


async def _fire(app: Chancy) -> int:
    """One firing pass of ``app``'s namespace, with the plugin's default catch-up."""
    seat = await cluster_of(app).schedules.firing(app.namespace)
    try:
        return await seat.fire_due(Cron().catch_up)
    finally:
        await seat.close()


async def _make_due(app: Chancy, seconds_ago: float) -> None:
    async with app.store.connection() as conn:
        await conn.execute("UPDATE chancy_cron SET next_fire_at = date_trunc('second', now()) "
                           "- make_interval(secs => %s)", (seconds_ago,))


async def _keys(app: Chancy) -> list[str]:
    async with app.store.connection() as conn:
        cur = await conn.execute("SELECT unique_key FROM chancy_jobs ORDER BY unique_key")
        return [row[0] for row in await cur.fetchall()]


async def test_apps_schedule_list_and_unschedule_only_their_own(make_app, dsn):
    a = await make_app(namespace="appA")
    b = Chancy(dsn, namespace="appB")
    async with b:
        await Cron.schedule(a, "report", _job(1), every=60)
        await Cron.schedule(b, "report", _job(2), every=60)
        assert [(s.namespace, s.job.args) for s in await Cron.schedules(a)] == [("appA", (1,))]
        assert [(s.namespace, s.job.args) for s in await Cron.schedules(b)] == [("appB", (2,))]
        await Cron.unschedule(b, "report")
        assert await Cron.schedules(b) == []
        assert [s.job.args for s in await Cron.schedules(a)] == [(1,)]


async def test_replacing_an_apps_set_with_nothing_removes_its_own_and_no_one_elses(make_app, dsn):
    a = await make_app(namespace="appA")
    b = Chancy(dsn, namespace="appB")
    async with b:
        await Cron.replace(a, [Spec("celery:tick", _job(1), every=5), Spec("celery:gone", _job(1), every=5)],
                           prefix="celery:")
        await Cron.schedule(a, "native", _job(1), every=5)  # outside the prefix: not the set's
        await Cron.replace(b, [Spec("celery:tick", _job(2), every=5)], prefix="celery:")
        assert await Cron.replace(a, [Spec("celery:tick", _job(3), every=5)], prefix="celery:") == ["celery:tick"]
        assert {(s.name, s.job.args) for s in await Cron.schedules(a)} == {("celery:tick", (3,)), ("native", (1,))}
        assert await Cron.replace(b, [], prefix="celery:") == []
        assert await Cron.schedules(b) == []
        assert {s.name for s in await Cron.schedules(a)} == {"celery:tick", "native"}
        with pytest.raises(ConfigurationError, match="not named 'celery:'"):
            await Cron.replace(a, [Spec("other", _job(1), every=5)], prefix="celery:")


async def test_a_firing_pass_fires_its_namespace_only_and_alike_names_do_not_collide(make_app, dsn):
    a = await make_app(namespace="appA")
    b = Chancy(dsn, namespace="appB")
    async with b:
        await Cron.schedule(a, "tick", _job(1), every=60)
        await Cron.schedule(b, "tick", _job(2), every=60)
        await _make_due(a, 1)  # both rows: the same tick is due in both namespaces
        assert await _fire(a) == 1
        [key_a] = await _keys(a)
        assert key_a.startswith("cron:tick:") and key_a.endswith("@appA")
        assert await _fire(a) == 0  # appB's due tick is not appA's to fire
        assert await _fire(b) == 1  # the same tick, not swallowed by appA's live job of that name
        assert sorted(await _keys(a)) == sorted([key_a, key_a.replace("@appA", "@appB")])


async def test_missed_ticks_collapse_into_one_firing_for_the_latest(make_app):
    app = await make_app()
    await Cron.schedule(app, "every-2s", _job(1), every=2)
    await Cron.schedule(app, "every-minute", _job(1), cron="* * * * *")
    await _make_due(app, 601)  # ten minutes of downtime: 300 and 10 missed ticks
    assert await _fire(app) == 2
    keys = await _keys(app)
    assert [key.split(":")[1] for key in keys] == ["every-2s", "every-minute"]
    now = datetime.now().astimezone()
    for key, period in zip(keys, (2, 60)):
        tick = datetime.fromisoformat(key.split(":", 2)[2])
        assert now - timedelta(seconds=period + 1) < tick <= now  # the latest missed tick
    for schedule in await Cron.schedules(app):  # and the grid goes on from it
        tick = datetime.fromisoformat(next(k for k in keys if f":{schedule.name}:" in k).split(":", 2)[2])
        assert schedule.next_fire_at == tick + timedelta(seconds=2 if schedule.every else 60)


async def test_one_firer_per_namespace_and_a_standby_takes_over(dsn):
    """appA's firer and appB's fire side by side (neither starves the other); a second
    appA firer waits on appA's lock and takes over when the first stops."""
    first_a, b, standby_a = (Chancy(dsn, namespace=ns) for ns in ("appA", "appB", "appA"))
    await first_a.migrate()
    await Cron.schedule(first_a, "tick", _job(1), every=0.3)
    await Cron.schedule(b, "tick", _job(2), every=0.3)

    async def fired(namespace: str, at_least: int) -> None:
        while sum(key.endswith("@" + namespace) for key in await _keys(b)) < at_least:
            await asyncio.sleep(0.05)

    firers = [asyncio.ensure_future(Cron(interval=0.1).fire_forever(app)) for app in (first_a, b)]
    try:
        await asyncio.wait_for(asyncio.gather(fired("appA", 2), fired("appB", 2)), 20)
        firers.append(asyncio.ensure_future(Cron(interval=0.1).fire_forever(standby_a)))
        await asyncio.sleep(0.5)
        assert await _advisory_locks_held(b) == 2  # appA's and appB's; the standby waits
        firers[0].cancel()
        fired_so_far = sum(key.endswith("@appA") for key in await _keys(b))
        await asyncio.wait_for(fired("appA", fired_so_far + 3), 20)
    finally:
        for firer in firers:
            firer.cancel()
        await asyncio.gather(*firers, return_exceptions=True)
        keys = await _keys(b)
        for app in (first_a, b, standby_a):
            await app.close()
    assert len(keys) == len(set(keys))


async def _advisory_locks_held(app: Chancy) -> int:
    async with app.store.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        return (await cur.fetchone())[0]


async def test_migration_5_keeps_a_live_databases_schedules_and_an_app_adopts_its_beat_rows(dsn):
    """Rows stored before namespaces: Cron.schedule's stay with the default namespace;
    beat_schedule's fire nowhere until the app naming them syncs, which keeps their tick."""
    old = Chancy(dsn)
    async with old:
        await old.migrate(4)
        async with old.store.connection() as conn:
            for name in ("report", "celery:nightly", "celery:orphan"):
                await conn.execute(
                    "INSERT INTO chancy_cron (name, job, cron, next_fire_at, last_fired_at) "
                    "VALUES (%s, %s::jsonb, '0 3 * * *', '2030-01-01 03:00+00', '2029-12-31 03:00+00')",
                    (name, '{"func": "proj.nightly", "args": [], "kwargs": {}, "queue": "default", "priority": 0, '
                           '"max_attempts": 1, "limits": [], "backoff": null, "meta": {}}'))
        assert await old.migrate(5) == [5]
        assert [(s.name, s.next_fire_at.year) for s in await Cron.schedules(old)] == [("report", 2030)]
        async with old.store.connection() as conn:
            cur = await conn.execute("SELECT name FROM chancy_cron WHERE namespace IS NULL ORDER BY name")
            assert [row[0] for row in await cur.fetchall()] == ["celery:nightly", "celery:orphan"]

    proj = Celery("proj", broker=dsn, set_as_current=False)
    proj.task(name="proj.nightly")(lambda: None)
    proj.conf.beat_schedule = {"nightly": {"task": "proj.nightly", "schedule": _crontab_3am()}}
    try:
        assert await asyncio.to_thread(sync_schedule, proj) == ["celery:nightly"]
        [adopted] = await asyncio.to_thread(Cron.schedules_sync, proj.chancy)
        assert (adopted.namespace, adopted.next_fire_at.year, adopted.last_fired_at.year) == ("proj", 2030, 2029)
    finally:
        proj.close()


def _crontab_3am():
    from chancy.compat.schedules import crontab

    return crontab(minute=0, hour=3)
