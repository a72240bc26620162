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

from interop_support import ran


def _rows(dsn: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


async def _get(result, timeout: float = 60.0):
    return await asyncio.to_thread(result.get, timeout=timeout)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_chords_and_ignored_results_on_a_stock_worker(interop_dsn, celery_app, celery_worker, pool):
    """Header parts finishing side by side complete the chord once: the body is one job,
    sent by the backend's counter (no celery.chord_unlock task polling). Then results
    asked to be ignored, on the same worker."""
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
    with pytest.raises(ValueError, match="part broke"):  # the part's own error first, as on Redis
        await _get(failing)
    body = AsyncResult(failing.id, app=celery_app)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('part broke'\)"):
        await _get(body)
    assert body.state == states.FAILURE
    # Each part's stored meta names its group, as Celery's stores do (to find the chord).
    failed_part = celery_app.backend.get_task_meta(failing.parent.results[1].id, cache=False)
    assert failed_part["status"] == states.FAILURE and failed_part["group_id"] == failing.parent.id

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

    await _check_ignored_results(interop_dsn, celery_app)
    await _check_a_running_task_reads_pending(interop_dsn, celery_app)
    await _check_a_failed_header_fails_the_chords_after_it(celery_app)
    await _check_group_joins(celery_app)


async def _check_ignored_results(interop_dsn: str, celery_app) -> None:
    """As on Redis: get() of an ignored result is None at once, the stored state stays
    PENDING; yet the row is finished (a failure as failed), so no restart runs it again."""
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


async def _check_a_running_task_reads_pending(interop_dsn: str, celery_app) -> None:
    """While a stock Celery worker runs a task that stored no state (no
    task_track_started), it reads PENDING as in Celery's stores, not STARTED."""
    running = celery_app.signature("interop.record", args=(41, 1.5)).apply_async()
    await eventually(lambda: _rows(interop_dsn, "SELECT 1 FROM chancy_jobs WHERE id = %s AND state = 'running'",
                                   job_id_for(running.id)), timeout=30, interval=0.05)
    assert celery_app.backend.get_task_meta(running.id, cache=False)["status"] == states.PENDING
    assert await _get(running) == 41


async def _check_a_failed_header_fails_the_chords_after_it(celery_app) -> None:
    """get() raises the failed part's error once the failure has reached the end of the
    chain (the next chord's body), as on Redis: its state reads FAILURE right away."""
    sig = celery_app.signature
    inner = chain(chord([sig("interop.add", args=(1, 1)), sig("interop.fail", args=("header broke",))],
                        sig("interop.total")),
                  chord([sig("interop.add", args=(1,)), sig("interop.add", args=(2,))], sig("interop.total")))
    result = group(inner, sig("interop.add", args=(1, 1))).apply_async()
    with pytest.raises((ValueError, ChordError)):
        await _get(result)
    assert result.results[0].state == states.FAILURE


async def _check_group_joins(celery_app) -> None:
    """GroupResult.get() reads its members together (a native join): results in the
    group's order, a failed member's error raised."""
    sig = celery_app.signature
    joined = group(sig("interop.add", args=(i, i)) for i in range(20)).apply_async()
    assert joined.supports_native_join
    assert await _get(joined) == [2 * i for i in range(20)]
    broken = group(sig("interop.add", args=(1, 1)), sig("interop.fail", args=("member broke",))).apply_async()
    with pytest.raises(ValueError, match="member broke"):
        await _get(broken)


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


async def test_a_chord_survives_its_worker_killed_mid_header(interop_dsn, celery_app, celery_worker):
    """kill -9 of the worker while a header part runs: the parts already returned stay
    counted, a new worker runs the lost part again, and the body is sent once."""
    victim = celery_worker(pool="prefork", concurrency=2)
    sig = celery_app.signature
    header = [sig("interop.record", args=(key,)) for key in (1, 2, 3)] + [sig("interop.record", args=(4, 60))]
    result = chord(header, sig("interop.total")).apply_async()
    slow = job_id_for(result.parent.results[3].id)
    await eventually(lambda: len(ran(interop_dsn)) == 3 and _rows(
        interop_dsn, "SELECT 1 FROM chancy_jobs WHERE id = %s AND state = 'running'", slow), timeout=30,
        message="three parts returned and the fourth running")
    victim.kill()
    with psycopg.connect(interop_dsn, autocommit=True) as conn:  # let the re-run finish at once
        conn.execute("UPDATE chancy_jobs SET args = '[4, 0]' WHERE id = %s", (slow,))
    celery_worker(pool="threads", concurrency=2)
    assert await _get(AsyncResult(result.id, app=celery_app)) == 1 + 2 + 3 + 4
    assert sorted(key for key, _ in ran(interop_dsn)) == [1, 2, 3, 4]
    assert _rows(interop_dsn, "SELECT count(*) FROM chancy_jobs WHERE func = 'interop.total'") == [(1,)]


async def test_a_claim_whose_holder_died_is_taken_over_once_it_lapses(interop_dsn, celery_app, monkeypatch):
    """The part that completed the chord died between claiming the body and sending it:
    the same part, run again (redelivered), sends the body once the claim has lapsed."""
    from chancy.compat import backend as backend_module

    backend = celery_app.backend
    group_id, part_ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    body = celery_app.signature("interop.total", queue="b-bodies")
    body_id = body.freeze().id
    backend.apply_chord((group_id, [AsyncResult(i, app=celery_app) for i in part_ids]), body)
    backend.set_chord_size(group_id, 2)
    requests = [Context(id=i, group=group_id, group_index=n, chord=dict(body)) for n, i in enumerate(part_ids)]
    backend.on_chord_part_return(requests[0], states.SUCCESS, 1)

    class Died(BaseException):
        pass

    def die(*args: object, **kwargs: object) -> None:
        raise Died

    monkeypatch.setattr(backend_module, "CHORD_CLAIM_SECONDS", 3.0)
    monkeypatch.setitem(celery_app.conf, "result_chord_join_timeout", 1.0)
    with monkeypatch.context() as dying:
        dying.setattr(backend, "_complete_chord", die)
        with pytest.raises(Died):
            backend.on_chord_part_return(requests[1], states.SUCCESS, 2)
    backend.on_chord_part_return(requests[1], states.SUCCESS, 2)  # the claim is still held: nothing sent
    body_rows = "SELECT args FROM chancy_jobs WHERE id = %s"
    assert _rows(interop_dsn, body_rows, job_id_for(body_id)) == []

    def redelivered() -> list[tuple]:  # the part run again, until the claim has lapsed
        backend.on_chord_part_return(requests[1], states.SUCCESS, 2)
        return _rows(interop_dsn, body_rows, job_id_for(body_id))

    assert await eventually(redelivered, timeout=20, interval=0.5) == [([[1, 2]],)]
    assert _rows(interop_dsn, "SELECT done, fired_at IS NOT NULL FROM chancy_celery_chords WHERE group_id = %s",
                 group_id) == [(2, True)]


def test_a_part_of_a_chord_this_backend_never_started_completes_it_by_its_own_size(interop_dsn, celery_app):
    """A chord applied before this backend counted chords (or by a client on another
    backend version): its parts still complete it, by the chord size their request
    carries; a part with no size anywhere waits rather than firing early."""
    backend = celery_app.backend
    group_id, part_ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    body = celery_app.signature("interop.total", queue="b-bodies")
    body_id = body.freeze().id
    unsized = Context(id=part_ids[0], group=group_id, group_index=0, chord=dict(body))
    backend.on_chord_part_return(unsized, states.SUCCESS, 20)
    assert _rows(interop_dsn, "SELECT done, size FROM chancy_celery_chords WHERE group_id = %s",
                 group_id) == [(1, None)]
    sized = Context(id=part_ids[1], group=group_id, group_index=1, chord={**body, "chord_size": 2})
    backend.on_chord_part_return(sized, states.SUCCESS, 22)
    assert _rows(interop_dsn, "SELECT args FROM chancy_jobs WHERE id = %s", job_id_for(body_id)) == [([[20, 22]],)]
