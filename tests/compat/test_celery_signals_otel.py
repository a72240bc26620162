"""``chancy.compat`` sends Celery's own signal objects with Celery's arguments, so
OpenTelemetry's Celery instrumentor (which connects to ``celery.signals``) traces a
``.delay()`` as a producer span and the run as a consumer span linked to it."""

from __future__ import annotations

import celery.signals
import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from chancy.compat import signals
from tests.compat.pool_worker import start_pool_worker
from tests.compat.proj import otel_tasks


def test_the_signals_are_celerys_own_objects():
    for name in ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
                 "before_task_publish", "after_task_publish", "worker_process_init", "worker_ready",
                 "worker_shutdown", "task_revoked"):
        assert getattr(signals, name) is getattr(celery.signals, name)


def test_celerys_registry_finds_our_tasks(celery_app):
    """Integrations look the task of a publish up by name through celery's current app."""
    from celery import registry

    assert registry.tasks.get(otel_tasks.traced.name) is otel_tasks.traced


def test_publish_signals_carry_celerys_headers_and_keep_added_ones(celery_app):
    seen = {}

    def before(sender, headers, body, routing_key, **_):
        seen.update(sender=sender, id=headers["id"], task=headers["task"], args=body[0], queue=routing_key)
        headers["x-trace"] = "abc"

    celery.signals.before_task_publish.connect(before)
    try:
        result = otel_tasks.traced.delay(1, 2)
    finally:
        celery.signals.before_task_publish.disconnect(before)
    assert seen == {"sender": otel_tasks.traced.name, "id": result.id, "task": otel_tasks.traced.name,
                    "args": (1, 2), "queue": "default"}
    record = celery_app.chancy.get_job_sync(result.id)
    assert record.meta["celery"]["headers"] == {"x-trace": "abc"}


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_delay_and_run_make_linked_producer_and_consumer_spans(celery_app, pool):
    otel_tasks.instrument()  # the producer side, in this process
    otel_tasks.exporter.clear()
    worker = start_pool_worker(celery_app, pool, concurrency=1)
    try:
        result = otel_tasks.traced.delay(2, 3)
        assert result.get(timeout=30) == 5
        consumer_spans = otel_tasks.finished_spans.delay().get(timeout=30)
    finally:
        worker.stop()
        CeleryInstrumentor().uninstrument()  # or every later publish in this process carries a traceparent
    name = otel_tasks.traced.name
    [producer] = [s for s in map(otel_tasks.span_data, otel_tasks.exporter.get_finished_spans())
                  if s["name"] == f"apply_async/{name}"]
    [consumer] = [s for s in consumer_spans if s["name"] == f"run/{name}"]
    assert producer["kind"] == "PRODUCER" and consumer["kind"] == "CONSUMER"
    assert producer["attributes"]["messaging.message.id"] == result.id
    assert consumer["attributes"]["messaging.message.id"] == result.id
    assert consumer["trace_id"] == producer["trace_id"] and consumer["parent_id"] == producer["span_id"]
