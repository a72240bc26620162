"""Chords, saved groups and ignore_result on Chancy's result backend, as Celery's
key-value backends (Redis) behave: stock ``celery worker`` subprocesses on Chancy's
broker and backend, and header parts returning concurrently against real Postgres."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest
from celery import chain, chord, group, states
from celery.app.task import Context
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult
from celery.signals import before_task_publish

from chancy.compat.protocol import job_id_for
from chancy.testing import eventually


def _rows(dsn: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


async def _get(result, timeout: float = 60.0):
    return await asyncio.to_thread(result.get, timeout=timeout)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_chords_join_natively_once_under_concurrent_parts(interop_dsn, celery_app, celery_worker, pool):
    """Header parts finishing side by side complete the chord once: the body is one job,
    sent by the backend's counter (no celery.chord_unlock task polling)."""
    worker = celery_worker(pool=pool, concurrency=4, app="b_chord_app")
    sig = celery_app.signature

    header = [sig("interop.add", args=(i, i)) for i in range(16)]
    result = chord(header, sig("interop.total")).apply_async()
    assert await _get(result) == sum(2 * i for i in range(16)), worker.log()
    group_id = result.parent.id
    assert _rows(interop_dsn, "SELECT count(*) FROM chancy_jobs WHERE func = 'interop.total'") == [(1,)]
    assert _rows(interop_dsn, "SELECT count(*) FROM chancy_jobs WHERE func = 'celery.chord_unlock'") == [(0,)]
    [(done, fired)] = _rows(interop_dsn, "SELECT done, fired_at IS NOT NULL FROM chancy_celery_chords "
                                         "WHERE group_id = %s", group_id)
    assert (done, fired) == (16, True)
    assert _rows(interop_dsn, "SELECT count(*) FROM chancy_celery_chord_parts WHERE group_id = %s", group_id) == [(0,)]

    # A part that fails fails the body with Celery's ChordError, once every part returned.
    failing = chord([sig("interop.add", args=(1, 1)), sig("interop.fail", args=("part broke",)),
                     sig("interop.add", args=(2, 2))], sig("interop.total")).apply_async()
    body = AsyncResult(failing.id, app=celery_app)  # failing.get() raises the header's error first
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('part broke'\)"):
        await _get(body)
    assert body.state == states.FAILURE

    # add_to_chord: a header part grows its chord; the body waits for the added task.
    grown = chord([sig("interop.b.grow", args=(5,)), sig("interop.add", args=(2, 2))],
                  sig("interop.total")).apply_async()
    assert await _get(grown) == 5 + 4 + 10, worker.log()

    # A group in a header is unrolled into it (as Celery does); one behind a chain is
    # not, and the body gets its results nested (the header is saved and joined).
    unrolled = chord([group(sig("interop.add", args=(1, 1)), sig("interop.add", args=(2, 2))),
                      sig("interop.add", args=(3, 3))], sig("interop.describe")).apply_async()
    assert sorted((await _get(unrolled))["args"][0]) == [2, 4, 6], worker.log()
    nested = chord([chain(sig("interop.add", args=(1, 1)), group(sig("interop.add", args=(1,)),
                                                                 sig("interop.add", args=(2,)))),
                    sig("interop.add", args=(3, 3))], sig("interop.describe")).apply_async()
    assert (await _get(nested))["args"] == [[[3, 4], 6]], worker.log()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_ignore_result_stores_nothing_and_finishes_the_row(interop_dsn, celery_app, celery_worker, pool):
    """As on Redis: get() of an ignored result is None at once, the stored state stays
    PENDING; yet the row is finished, so no worker restart runs the task again."""
    celery_worker(pool=pool, concurrency=2, app="b_chord_app")
    sig = celery_app.signature
    sent = sig("interop.add", args=(1, 2)).apply_async(ignore_result=True)
    started = time.monotonic()
    assert sent.get(timeout=30) is None and time.monotonic() - started < 1
    failing = sig("interop.fail", args=("ignored boom",)).apply_async(ignore_result=True)
    kept = sig("interop.add", args=(4, 5)).apply_async()
    assert await _get(kept) == 9

    expected = {str(job_id_for(sent.id)): "succeeded", str(job_id_for(failing.id)): "failed"}

    def finished() -> bool:
        rows = _rows(interop_dsn, "SELECT id::text, state FROM chancy_jobs WHERE id = ANY(%s)",
                     [job_id_for(r.id) for r in (sent, failing)])
        return dict(rows) == expected

    await eventually(finished, timeout=30)
    for ignored in (sent, failing):
        meta = celery_app.backend.get_task_meta(ignored.id, cache=False)
        assert (meta["status"], meta["result"]) == (states.PENDING, None)
    # A retry asked to ignore its result stores none either.
    retried = sig("interop.retry_twice").apply_async(ignore_result=True)
    await eventually(lambda: _rows(interop_dsn, "SELECT state, attempts FROM chancy_jobs WHERE id = %s",
                                   job_id_for(retried.id)) == [("succeeded", 3)], timeout=30)
    assert celery_app.backend.get_task_meta(retried.id, cache=False)["status"] == states.PENDING


def test_group_results_are_saved_restored_and_deleted(celery_app):
    group_id = str(uuid.uuid4())
    saved = GroupResult(group_id, [AsyncResult(str(uuid.uuid4()), app=celery_app) for _ in range(3)],
                        app=celery_app)
    saved.save()
    restored = GroupResult.restore(group_id, app=celery_app)
    assert restored is not None and [r.id for r in restored.results] == [r.id for r in saved.results]
    nested = GroupResult(str(uuid.uuid4()), [saved, AsyncResult(str(uuid.uuid4()), app=celery_app)], app=celery_app)
    nested.save()
    back = GroupResult.restore(nested.id, app=celery_app)
    assert isinstance(back.results[0], GroupResult) and back.results[0].id == group_id
    saved.delete()
    assert GroupResult.restore(group_id, app=celery_app) is None
    assert GroupResult.restore("no-such-group", app=celery_app) is None


def test_concurrent_and_repeated_part_returns_send_the_body_once(interop_dsn, celery_app):
    """Parts returning at the same moment from many threads, each part also returned a
    second time (redelivered after a lost worker): the body is published exactly once,
    with every part's result in header order."""
    backend = celery_app.backend
    parts = 24
    group_id = str(uuid.uuid4())
    body = celery_app.signature("interop.total", queue="b-bodies")
    body_id = body.freeze().id
    part_ids = [str(uuid.uuid4()) for _ in range(parts)]
    backend.apply_chord((group_id, [AsyncResult(i, app=celery_app) for i in part_ids]), body)
    backend.set_chord_size(group_id, parts)
    published: list[str] = []

    def count(headers=None, **_: object) -> None:
        if headers and headers.get("id") == body_id:
            published.append(body_id)

    before_task_publish.connect(count, weak=False)
    barrier = threading.Barrier(parts * 2)
    errors: list[BaseException] = []

    def part_returns(index: int) -> None:
        request = Context(id=part_ids[index % parts], group=group_id, group_index=index % parts, chord=dict(body))
        try:
            barrier.wait(timeout=30)
            backend.on_chord_part_return(request, states.SUCCESS, index % parts)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=part_returns, args=(i,)) for i in range(parts * 2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        before_task_publish.disconnect(count)
    assert not errors
    assert published == [body_id]
    [(args,)] = _rows(interop_dsn, "SELECT args FROM chancy_jobs WHERE id = %s", job_id_for(body_id))
    assert args == [list(range(parts))]
    # A part returning after the body was sent changes nothing.
    late = Context(id=part_ids[0], group=group_id, group_index=0, chord=dict(body))
    backend.on_chord_part_return(late, states.SUCCESS, 0)
    assert _rows(interop_dsn, "SELECT done, fired_at IS NOT NULL FROM chancy_celery_chords WHERE group_id = %s",
                 group_id) == [(parts, True)]
