"""An ack and the result store of the same delivery at the same moment (a prefork
child stores its task's outcome while the parent's ack of that delivery is on its way):
the ack waits for the store's row lock, then finds the row finished. It must still name
the consumer on it (``acked_by``), as an ack that comes after the outcome does; reading
the row as it was when the ack began (running) matched neither of its two updates."""

from __future__ import annotations

import threading
import time

import psycopg

from chancy import Chancy
from chancy.job import Job
from chancy.migrations import Names
from chancy.queues.pg import Queue
from chancy.store.pg.celery_connection import ProcessConnection
from chancy.store.pg.celery_transport import Ack, TransportSQL
from chancy.store.pg.jobs import JobSQL, claim_steps
from chancy.store.pg.statements import single

CONSUMER = "celery:host:1:abcd"


async def test_an_ack_waiting_for_the_result_store_still_names_the_consumer(interop_dsn):
    app = Chancy(interop_dsn, plugins=[Queue("celery")])
    database = ProcessConnection(interop_dsn)
    names = Names("chancy_")
    try:
        await app.push(Job("interop.add", args=[1, 2], queue="celery"))
        [record] = database.run(claim_steps(JobSQL(names), "celery", CONSUMER, 1))
        ack = TransportSQL(names).ack(CONSUMER, [Ack(record.id, record.attempts, finish=False)])
        with psycopg.connect(interop_dsn) as store:  # the result store, not committed yet
            store.execute("UPDATE chancy_jobs SET state = 'succeeded', result = '3', completed_at = now(),"
                          " taken_by = NULL WHERE id = %s", (record.id,))
            acking = threading.Thread(target=lambda: database.run(single(ack)))
            acking.start()
            time.sleep(0.5)  # the ack waits for the store's row lock
            assert acking.is_alive()
            store.commit()
        acking.join(10)
        with psycopg.connect(interop_dsn) as conn:
            row = conn.execute("SELECT state, result, meta->'celery'->>'acked_by' FROM chancy_jobs WHERE id = %s",
                               (record.id,)).fetchone()
        assert row == ("succeeded", 3, CONSUMER)
    finally:
        database.close()
        await app.close()
