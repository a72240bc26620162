"""The Canvas guide's patterns: chains (with res.parent), groups, chords (also group |
task), chunks, map/starmap, link and link_error — advanced by the worker."""

from __future__ import annotations

import pytest

from chancy.compat import chain, chord, group, signature, states
from chancy.job import JobState
from tests.compat.proj import tasks


def test_chain_passes_results_along(worker):
    res = chain(tasks.add.s(2, 2), tasks.add.s(4), tasks.add.s(8))()
    assert res.get(timeout=10) == 16
    assert res.parent.get(timeout=10) == 8
    assert res.parent.parent.get(timeout=10) == 4
    assert res.parent.parent.parent is None


def test_pipe_syntax_and_immutable_signatures(worker):
    res = (tasks.add.s(2, 2) | tasks.mul.s(8) | tasks.add.si(1, 1)).apply_async()
    assert res.get(timeout=10) == 2
    assert res.parent.get(timeout=10) == 32


def test_later_steps_exist_and_are_pending_before_they_run(celery_app):
    res = (tasks.add.s(1, 1) | tasks.add.s(1)).delay()
    assert res.state == states.PENDING
    record = celery_app.chancy.get_job_sync(res.id)
    assert record is not None and record.state is JobState.SCHEDULED


def test_a_failing_step_fails_the_rest_of_the_chain(worker):
    res = (tasks.add.s(1, 1) | tasks.fail.si("step two") | tasks.add.s(1)).delay()
    with pytest.raises(ValueError, match="step two"):
        res.get(timeout=10)
    assert res.state == states.FAILURE
    assert res.parent.parent.get(timeout=10) == 2


def test_group_results_in_order(worker):
    res = group(tasks.add.s(i, i) for i in range(10))()
    assert res.get(timeout=10) == [i + i for i in range(10)]
    assert len(res) == 10 and res.ready() and res.successful() and res.completed_count() == 10


def test_chord_body_gets_header_results_in_order(worker):
    res = chord(tasks.add.s(i, i) for i in range(10))(tasks.xsum.s())
    assert res.get(timeout=15) == sum(i + i for i in range(10))
    assert res.parent.get(timeout=10) == [i + i for i in range(10)]


def test_group_pipe_task_is_a_chord(worker):
    res = (group(tasks.add.s(i, 1) for i in range(4)) | tasks.xsum.s()).delay()
    assert res.get(timeout=15) == sum(i + 1 for i in range(4))


def test_chord_body_fires_exactly_once_under_concurrent_completions(worker, celery_app):
    res = chord([tasks.add.s(i, 0) for i in range(40)], tasks.xsum.s()).apply_async()
    assert res.get(timeout=30) == sum(range(40))
    with celery_app.chancy.store.connection_sync() as conn:
        count = conn.execute("SELECT count(*) FROM chancy_jobs WHERE func = %s",
                             (tasks.xsum.name,)).fetchone()[0]
    assert count == 1


def test_chord_with_a_failing_header_fails_its_body(worker):
    res = chord([tasks.add.s(1, 1), tasks.fail.si("header")], tasks.xsum.s()).delay()
    with pytest.raises(ValueError, match="header"):
        res.get(timeout=10)


def test_chain_with_a_group_in_the_middle(worker):
    res = chain(tasks.add.s(1, 1), group(tasks.mul.s(10), tasks.mul.s(100)), tasks.xsum.s()).delay()
    assert res.get(timeout=15) == 20 + 200


def test_link_and_link_error(worker):
    ok = tasks.add.apply_async((2, 2), link=tasks.mul.s(10), link_error=tasks.whoami.si())
    assert ok.get(timeout=10) == 4
    callback, errback = ok.children
    assert callback.get(timeout=10) == 40
    assert errback.state == states.REVOKED  # the task succeeded: its errback never runs

    bad = tasks.fail.apply_async(("x",), link=tasks.add.s(1), link_error=tasks.log_failure.s())
    with pytest.raises(ValueError):
        bad.get(timeout=10)
    callback, errback = bad.children
    assert errback.get(timeout=10) == f"{bad.id} failed"  # a one-argument errback gets the task id
    assert callback.state == states.FAILURE


def test_errback_with_request_exc_traceback(worker):
    bad = tasks.fail.apply_async(("broken",), link_error=tasks.error_handler.s())
    with pytest.raises(ValueError):
        bad.get(timeout=10)
    (errback,) = bad.children
    assert errback.get(timeout=10) == {"failed": bad.id, "exc": "ValueError: broken", "has_traceback": True}


def test_chain_steps_record_parent_and_root(worker):
    res = (tasks.add.s(1, 1) | tasks.whoami.si()).delay()
    info = res.get(timeout=10)
    assert info["parent_id"] == res.parent.id
    assert info["root_id"] == res.parent.id


def test_chunks_map_and_starmap(worker):
    res = tasks.add.chunks(zip(range(10), range(10)), 3).group().apply_async()
    assert res.get(timeout=15) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert tasks.xsum.map([[1, 2], [3, 4]]).delay().get(timeout=10) == [3, 7]
    assert tasks.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=10) == [3, 7]


def test_signature_by_name_and_options(worker):
    sig = signature("tests.compat.proj.tasks.add", args=(2, 3), countdown=0)
    assert sig.delay().get(timeout=10) == 5
    assert tasks.add.s(2).set(queue="default").delay(5).get(timeout=10) == 7


def test_revoking_a_later_step_stops_the_chain_there(worker):
    res = (tasks.sleeper.s(0.3) | tasks.add.s(1) | tasks.add.s(2)).delay()
    res.parent.revoke()
    assert res.parent.state == states.REVOKED
    assert res.state == states.REVOKED  # what waited on the revoked step is revoked with it
    assert res.parent.parent.get(timeout=10) == 0.3


def test_revoking_the_first_step_revokes_the_whole_chain(celery_app):
    res = (tasks.add.s(1, 1) | tasks.add.s(1) | tasks.add.s(1)).delay()
    res.parent.parent.revoke()
    assert [res.state, res.parent.state, res.parent.parent.state] == [states.REVOKED] * 3


def test_countdown_of_a_later_step_counts_from_its_release(worker, celery_app):
    res = (tasks.add.s(1, 1) | tasks.add.s(1).set(countdown=3600)).delay()
    assert res.parent.get(timeout=10) == 2
    record = celery_app.chancy.get_job_sync(res.id)  # released in the parent's own transaction
    assert record.state is JobState.SCHEDULED and record.args == (2, 1)
    assert (record.scheduled_at - record.created_at).total_seconds() > 3500


def test_group_options_apply_to_members_without_their_own(celery_app):
    res = group(tasks.add.s(1, 1), tasks.add.s(2, 2).set(queue="own")).apply_async(queue="bulk", priority=4)
    records = [celery_app.chancy.get_job_sync(r.id) for r in res]
    assert [(r.queue, r.priority) for r in records] == [("bulk", 4), ("own", 4)]


def test_group_result_restore_from_the_rows(worker, celery_app):
    from chancy.compat.result import GroupResult

    res = group(tasks.add.s(i, i) for i in range(5)).delay()
    res.save()
    restored = GroupResult.restore(res.id, app=celery_app)
    assert [r.id for r in restored] == [r.id for r in res]
    assert restored.get(timeout=10) == [0, 2, 4, 6, 8]
    assert GroupResult.restore("no-such-group", app=celery_app) is None
