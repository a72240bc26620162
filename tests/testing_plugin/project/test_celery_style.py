"""The plugin with a chancy.compat (Celery-style) app: this module's chancy_app fixture
overrides the ini setting."""

import pytest

import celery_shop
from chancy.testing import assert_pushed, drain, pushed_jobs, refute_pushed


@pytest.fixture
def chancy_app():
    return celery_shop.app


def test_delay_in_memory(chancy_memory):
    celery_shop.mul.delay(6, 7)
    assert_pushed(celery_shop.mul)
    refute_pushed(celery_shop.chained)


def test_delay_drained_on_a_database(chancy_db):
    result = celery_shop.chained.delay(4)
    drain(chancy_db).assert_succeeded()
    assert result.get(timeout=10) == 4
    assert [job.result for job in pushed_jobs(chancy_db, celery_shop.mul)] == [40]
