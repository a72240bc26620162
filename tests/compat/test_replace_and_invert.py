"""``Task.replace()`` (nesting, and a workflow around the replaced task going on, as in
Celery's canvas integration tests), ``~sig`` on map/starmap/chunks, and ``ignore_result``
making ``get()`` return None at once (Celery's ``test_ignore_result``)."""

from __future__ import annotations

import time

import pytest

from chancy.compat import chain, chord, group
from tests.compat.pool_worker import pool_worker  # noqa: F401 - the fixture
from tests.compat.proj import fidelity

TIMEOUT = 30


@pytest.mark.parametrize("replacements", (0, 1, 3))
def test_replaced_task_nesting_increments(pool_worker, replacements):
    """Celery's test_replaced_task_nesting_increments."""
    result = fidelity.record_replaced_task_nesting.delay(replacements)
    assert result.get(timeout=TIMEOUT) == list(range(replacements + 1))


def test_replaced_steps_keep_chain_group_and_chord_going(pool_worker):
    assert fidelity.replace_with_chain.si(42).delay().get(timeout=TIMEOUT) == 42
    middle = chain(fidelity.identity.s(42), fidelity.replace_with_chain.s(), fidelity.identity.s())
    assert middle.delay().get(timeout=TIMEOUT) == 42
    chained = chain(fidelity.add.s(4, 4), fidelity.add_replaced.s(8), fidelity.add.s(16))
    assert chained.delay().get(timeout=TIMEOUT) == 32
    members = group(fidelity.identity.s(42), fidelity.replace_with_chain.s(1337)).delay()
    assert members.get(timeout=TIMEOUT) == [42, 1337]
    body = chord([fidelity.add_replaced.si(1, 1), fidelity.add.si(2, 2)], fidelity.identity.s()).delay()
    assert body.get(timeout=TIMEOUT) == [2, 4]
    assert fidelity.replace_with_group.delay(10).get(timeout=TIMEOUT) == [11, 12]


def test_a_failing_replacement_fails_the_replaced_task_and_the_rest(pool_worker):
    result = chain(fidelity.replace_with_failure.si(), fidelity.identity.s()).delay()
    with pytest.raises(ValueError, match="replacement failed"):
        result.get(timeout=TIMEOUT)
    assert result.parent.state == "FAILURE" and result.state == "FAILURE"


def test_replace_runs_now_when_eager(celery_app):
    assert fidelity.replace_with_chain.apply((5,)).get() == 5


@pytest.mark.parametrize("make, expected", [
    (lambda: fidelity.add.starmap([(1, 2), (3, 4)]), [3, 7]),
    (lambda: fidelity.identity.map([1, 2]), [1, 2]),
    (lambda: fidelity.add.chunks([(1, 1), (2, 2), (3, 3)], 2), [[2, 4], [6]]),
], ids=["starmap", "map", "chunks"])
def test_invert_sends_and_waits(pool_worker, make, expected):
    assert ~make() == expected


def test_ignore_result_get_returns_none_at_once(pool_worker):
    """Celery's test_ignore_result."""
    result = fidelity.add.apply_async((1, 2), ignore_result=True)
    started = time.monotonic()
    assert result.get() is None
    assert time.monotonic() - started < 0.5
    time.sleep(1)
    assert result.result is None
