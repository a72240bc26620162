"""A canvas step whose worker died, and that recovery fails for good, must move its
canvas on like any failed step (regression: its later steps used to wait forever)."""

import asyncio

from chancy.compat import states
from chancy.plugins.recovery import recover
from tests.compat.proj import tasks


def test_a_step_lost_with_its_worker_fails_the_rest_of_the_chain(celery_app):
    res = (tasks.add.s(1, 1) | tasks.add.s(1)).delay()
    first = res.parent
    chancy = celery_app.chancy

    async def claim_on_a_worker_that_dies_then_recover() -> None:
        try:
            async with chancy.store.connection() as conn:  # its last attempt
                await conn.execute("UPDATE chancy_jobs SET max_attempts = 1 WHERE id = %s", (first.id,))
            record = await chancy.get_job(first.id)
            claimed = await chancy.queue(record.queue).claim("worker-that-died", 10)
            assert [r.id for r in claimed] == [record.id]
            assert await recover(chancy) == 1
        finally:
            await chancy.close()

    asyncio.run(claim_on_a_worker_that_dies_then_recover())
    assert first.state == states.FAILURE
    assert "WorkerLost" in (first.traceback or "") or "stopped heartbeating" in str(first.result)
    assert res.state == states.FAILURE
