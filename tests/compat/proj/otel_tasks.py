"""OpenTelemetry's Celery instrumentor recording into the SDK's in-memory exporter, set up
the way Celery's docs say for a prefork pool: in each pool process, on
``worker_process_init`` (of ``celery.signals``, which ``chancy.compat`` sends)."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.compat.proj.celery import app

exporter = InMemorySpanExporter()


def instrument(**_: Any) -> None:
    """Trace this process's Celery signals into :data:`exporter` (once per process)."""
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor.instrument(tracer_provider=provider)


worker_process_init.connect(instrument, weak=False)


@app.task
def traced(x, y):
    return x + y


@app.task
def finished_spans() -> list[dict[str, Any]]:
    """The spans this worker process recorded, as plain data."""
    return [span_data(span) for span in exporter.get_finished_spans()]


def span_data(span: Any) -> dict[str, Any]:
    return {"name": span.name, "kind": span.kind.name, "trace_id": span.context.trace_id,
            "span_id": span.context.span_id, "parent_id": span.parent.span_id if span.parent else None,
            "attributes": dict(span.attributes or {})}
