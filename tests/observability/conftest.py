from __future__ import annotations

import types
from typing import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chancy import Chancy, Queue
from chancy.observability.otel import Instrumentation, instrument
from obs_tasks import QUEUES


@pytest.fixture
def otel() -> types.SimpleNamespace:
    """The OpenTelemetry SDK recording into memory (spans and metrics)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return types.SimpleNamespace(exporter=exporter, tracer_provider=tracer_provider, reader=reader,
                                 meter_provider=MeterProvider(metric_readers=[reader]))


@pytest.fixture
async def app(dsn: str) -> Chancy:
    """A migrated app with a queue per pool, as obs_tasks declares them."""
    app = Chancy(dsn, plugins=[Queue(QUEUES["asyncio"], executor="asyncio", concurrency=2),
                               Queue(QUEUES["thread"], executor="thread", concurrency=2),
                               Queue(QUEUES["process"], executor="process", concurrency=1)])
    await app.migrate()
    yield app
    await app.close()


@pytest.fixture
def instrumented(app: Chancy, otel: types.SimpleNamespace) -> Iterator[Instrumentation]:
    instrumentation = instrument(app, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    yield instrumentation
    instrumentation.uninstrument()
