"""Tests of the shop project, written as a user of Chancy's pytest plugin would."""

import asyncio

import pytest

import shop
from chancy.testing import assert_pushed, drain, drain_async, pushed_jobs, refute_pushed, running_worker


def test_assert_pushed_in_memory(chancy_memory):
    shop.add.push_sync(1, 2)
    shop.send_receipt.push_sync(7, to="bob@example.com")
    assert_pushed(shop.add, args=[1, 2])
    assert_pushed(shop.send_receipt, kwargs={"to": "bob@example.com"}, queue="emails", count=1)
    refute_pushed(shop.add, args=[2, 2])
    refute_pushed(shop.broken)
    assert [job.func for job in pushed_jobs(chancy_memory)] == ["shop.add", "shop.send_receipt"]


def test_drain_runs_pushed_jobs_their_children_and_retries(chancy_memory):
    shop.place_order.push_sync(42, [1, 2, 3])
    shop.flaky.push_sync("a")
    result = drain(chancy_memory)
    assert len(result.succeeded) == 6 and not result.failed and result.retries == 2
    assert sorted(job.result for job in pushed_jobs(chancy_memory, shop.add)) == [43, 44, 45]
    assert pushed_jobs(chancy_memory, shop.flaky)[0].result == "third time lucky"
    result.assert_succeeded()


def test_drain_reports_a_failure(chancy_memory):
    shop.broken.push_sync()
    result = drain(chancy_memory)
    assert len(result.failed) == 1 and "ValueError: the warehouse is on fire" in str(result)
    with pytest.raises(AssertionError, match="the warehouse is on fire"):
        result.assert_succeeded()


async def test_async_test_in_memory(chancy_memory):
    await shop.double.push(21)
    result = await drain_async(chancy_memory)
    assert [job.result for job in result.succeeded] == [42]


def test_database_push_and_drain(chancy_db):
    shop.place_order.push_sync(1, [10])
    assert_pushed(shop.place_order, args=[1, [10]])
    refute_pushed(shop.add)
    result = drain(chancy_db)
    assert len(result.succeeded) == 3
    assert_pushed(shop.add, args=[1, 10])
    assert pushed_jobs(chancy_db, shop.add)[0].result == 11


def test_each_test_gets_an_empty_database(chancy_db):
    assert pushed_jobs(chancy_db) == []


async def test_async_database_with_a_worker(chancy_db):
    reference = await shop.double.push(5)
    async with running_worker(chancy_db):
        record = await chancy_db.wait(reference, timeout=60)
    assert record.result == 10


async def test_async_database_again(chancy_db):
    """The previous async test's pools were closed in its own loop: this one connects anew."""
    await shop.add.push(1, 1)
    assert_pushed(shop.add, args=[1, 1])
    assert (await drain_async(chancy_db)).succeeded[0].result == 2


def test_a_worker_in_a_sync_test(chancy_worker, chancy_db):
    reference = shop.add.push_sync(2, 3)
    assert chancy_db.wait_sync(reference, timeout=60).result == 5


def test_a_worker_on_memory_queues(chancy_memory, chancy_worker):
    reference = shop.add.push_sync(3, 4)
    assert chancy_memory.wait_sync(reference, timeout=60).result == 7


# --- these fail on purpose: the outer test reads their messages -------------------------------
def test_fails_wrong_arguments(chancy_memory):
    shop.add.push_sync(1, 2)
    assert_pushed(shop.add, args=[9, 9])


def test_fails_nothing_of_that_task(chancy_memory):
    shop.add.push_sync(1, 2)
    assert_pushed(shop.send_receipt)


def test_fails_refuted_push(chancy_memory):
    shop.add.push_sync(1, 2)
    refute_pushed(shop.add, args=[1, 2])


def test_fails_count(chancy_db):
    shop.add.push_sync(1, 2)
    shop.add.push_sync(1, 2)
    assert_pushed(shop.add, args=(1, 2), count=1)


def test_fails_drained_job(chancy_memory):
    shop.broken.push_sync()
    drain(chancy_memory).assert_succeeded()
