"""Tasks of the observability tests, on an app with one queue per pool (``chancy worker -A
obs_tasks`` serves them all at once). In a process-pool child of a test that asks (with
:data:`CHILD_TRACING`), OpenTelemetry is set up at import into an in-memory exporter, as an
application's module sets it up in each child; :func:`child_spans` reads it back."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chancy import Chancy, Queue
from chancy.observability.otel import instrument

#: Set (to anything) in a test's environment to trace its process-pool children.
CHILD_TRACING = "CHANCY_TEST_CHILD_TRACING"
#: The queue of each pool.
QUEUES = {"asyncio": "on_asyncio", "thread": "on_thread", "process": "on_process"}

app = Chancy(plugins=[Queue(QUEUES["asyncio"], executor="asyncio", concurrency=2),
                      Queue(QUEUES["thread"], executor="thread", concurrency=2),
                      Queue(QUEUES["process"], executor="process", concurrency=1)])
log = logging.getLogger("obs_tasks")
exporter = InMemorySpanExporter()

if os.environ.get(CHILD_TRACING) and multiprocessing.parent_process() is not None:
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(app, tracer_provider=_provider)


def _current_span() -> dict[str, int]:
    context = trace.get_current_span().get_span_context()
    return {"trace_id": context.trace_id, "span_id": context.span_id}


@app.task
def current_span() -> dict[str, int]:
    """The span current while the task runs."""
    return _current_span()


@app.task
async def async_current_span() -> dict[str, int]:
    await asyncio.sleep(0)
    return _current_span()


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def log_marker(marker: str) -> str:
    log.warning("marker %s", marker)
    return marker


@app.task
def wait_for_file(path: str) -> None:
    """Runs until ``path`` exists (at most 60 s): a job the test holds in flight."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


@app.task
def child_spans() -> list[dict[str, Any]]:
    """The spans this process-pool child recorded, as plain data."""
    return [span_data(span) for span in exporter.get_finished_spans()]


def span_data(span: Any) -> dict[str, Any]:
    return {"name": span.name, "kind": span.kind.name, "trace_id": span.context.trace_id,
            "span_id": span.context.span_id, "parent_id": span.parent.span_id if span.parent else None,
            "attributes": dict(span.attributes or {}), "status": span.status.status_code.name,
            "events": [(event.name, dict(event.attributes or {})) for event in span.events]}
