"""OpenTelemetry: a PRODUCER span per push and a CONSUMER span per run, linked through the
job row, under every pool (a process-pool child's spans recorded and exported there), and
the worker's metrics, recorded with the SDK's in-memory exporter and metric reader."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor

import obs_tasks
from chancy import Job, JobState, execution
from chancy.observability.otel import CARRIER, instrument
from chancy.testing import running_worker
from obs_tasks import QUEUES, span_data


def _by_id(spans: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["messaging.message.id"]: s for s in spans if s["kind"] == kind}


def _metric_points(reader: Any) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_push_and_run_spans_are_linked_under_every_pool(app, otel, instrumented, monkeypatch):
    monkeypatch.setenv(obs_tasks.CHILD_TRACING, "1")
    jobs = {}
    for pool, queue in QUEUES.items():
        jobs[pool, "ok"] = await app.push(Job(obs_tasks.current_span, queue=queue))
        jobs[pool, "bad"] = await app.push(Job(obs_tasks.fail, args=["boom on " + pool], queue=queue))
    jobs["asyncio", "coroutine"] = await app.push(Job(obs_tasks.async_current_span, queue=QUEUES["asyncio"]))
    async with running_worker(app):
        records = {key: await ref.wait(timeout=60) for key, ref in jobs.items()}
        child = await app.push(Job(obs_tasks.child_spans, queue=QUEUES["process"]))
        child_spans = (await child.wait(timeout=60)).result
    here = [span_data(span) for span in otel.exporter.get_finished_spans()]
    producers = _by_id(here, "PRODUCER")
    consumers = {**_by_id(here, "CONSUMER"), **_by_id(child_spans, "CONSUMER")}
    for (pool, kind), record in records.items():
        job_id = str(record.id)
        producer, consumer = producers[job_id], consumers[job_id]
        assert producer["name"] == f"push {record.func}"
        assert producer["attributes"] == {
            "messaging.system": "chancy", "messaging.operation.type": "send", "messaging.operation.name": "push",
            "messaging.destination.name": record.queue, "chancy.task.name": record.func,
            "messaging.message.id": job_id}
        assert consumer["name"] == f"run {record.func}", pool
        assert (consumer["trace_id"], consumer["parent_id"]) == (producer["trace_id"], producer["span_id"]), pool
        assert consumer["attributes"] | {} == {
            "messaging.system": "chancy", "messaging.operation.type": "process", "messaging.operation.name": "run",
            "messaging.destination.name": record.queue, "messaging.message.id": job_id,
            "chancy.task.name": record.func, "chancy.job.attempt": 1,
            "chancy.job.outcome": "failed" if kind == "bad" else "succeeded",
            **({"error.type": "builtins.ValueError"} if kind == "bad" else {})}, pool
        if kind == "bad":
            assert record.state is JobState.FAILED
            assert consumer["status"] == "ERROR"
            [(event, fields)] = consumer["events"]
            assert event == "exception" and fields["exception.message"] == "boom on " + pool
            assert "ValueError: boom on" in fields["exception.stacktrace"]
        else:
            assert record.state is JobState.SUCCEEDED and consumer["status"] == "OK"
            # The run span is current inside the task: its own spans and logs join the trace.
            assert record.result == {"trace_id": consumer["trace_id"], "span_id": consumer["span_id"]}, pool
    # The process pool's runs were spanned in the child, not here.
    assert not {str(records["process", kind].id) for kind in ("ok", "bad")} & set(_by_id(here, "CONSUMER"))

    points = _metric_points(otel.reader)
    runs = {(p.attributes["messaging.destination.name"], p.attributes["chancy.task.name"],
             p.attributes["chancy.job.outcome"]): p.value for p in points["chancy.job.runs"]}
    for pool, queue in QUEUES.items():
        assert runs[queue, obs_tasks.fail.name, "failed"] == 1
        assert runs[queue, obs_tasks.current_span.name, "succeeded"] == 1
    assert sum(p.value for p in points["chancy.job.failures"]) == 3
    assert sum(p.count for p in points["chancy.job.duration"]) == sum(runs.values())
    assert sum(p.count for p in points["chancy.job.queue_lag"]) == sum(runs.values())
    assert all(p.min >= 0 for p in points["chancy.job.queue_lag"])


@pytest.mark.parametrize("pool", ["thread", "process"])
async def test_prefetched_jobs_durations_are_counted(app, otel, instrumented, pool):
    """Prefetched jobs are claimed without a start: the worker gives the hooks when they
    really started (handed to a thread; reported by the process child)."""
    refs = [await app.push(Job(obs_tasks.log_marker, args=[str(i)], queue=QUEUES[pool])) for i in range(6)]
    async with running_worker(app, queues=[QUEUES[pool]]):  # the default prefetch
        for ref in refs:
            await ref.wait(timeout=30)
    points = _metric_points(otel.reader)
    assert sum(p.count for p in points["chancy.job.duration"]) == sum(p.value for p in points["chancy.job.runs"]) == 6
    assert all(p.min >= 0 for p in points["chancy.job.duration"])


@pytest.mark.parametrize("carrier", ["garbage", ["00-x"], {"traceparent": "00-zz-yy-01"}, {"traceparent": 5},
                                     {"traceparent": f"00-{'f' * 32}-{'0' * 16}-01", "tracestate": ["x"]}])
async def test_a_malformed_trace_context_starts_a_new_trace(app, otel, carrier):
    ref = await app.push(Job(obs_tasks.current_span, queue=QUEUES["thread"], meta={CARRIER: carrier}))
    instrumentation = instrument(app, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        async with running_worker(app, queues=[QUEUES["thread"]]):
            record = await ref.wait(timeout=30)
    finally:
        instrumentation.uninstrument()
    assert record.state is JobState.SUCCEEDED
    [consumer] = [span_data(s) for s in otel.exporter.get_finished_spans()]
    assert consumer["parent_id"] is None
    assert record.result == {"trace_id": consumer["trace_id"], "span_id": consumer["span_id"]}


async def test_uninstrument_takes_everything_back_and_instrument_is_idempotent(app, otel):
    observers, hooks = list(execution.run_observers), list(app.hooks.completion)
    instrumentation = instrument(app, tracer_provider=otel.tracer_provider)
    assert instrument(app) is instrumentation
    assert len(execution.run_observers) == len(observers) + 1 and len(app.hooks.completion) == len(hooks) + 1
    instrumentation.uninstrument()
    assert execution.run_observers == observers and list(app.hooks.completion) == hooks
    assert "push_many" not in vars(app) and "push_many_sync" not in vars(app)
    await app.push(Job(obs_tasks.current_span, queue=QUEUES["thread"]))
    assert otel.exporter.get_finished_spans() == ()
    assert instrument(app, tracer_provider=otel.tracer_provider) is not instrumentation
    _installed_again = instrument(app)
    _installed_again.uninstrument()
    with pytest.raises(TypeError, match="Chancy app"):
        instrument(object())


def test_celery_compat_jobs_are_left_to_celerys_instrumentor_when_it_is_on(app, otel, instrumented):
    """The decision documented in chancy.observability.otel: never two spans for one push or run."""
    celery_job, native_job = Job("proj.tasks.add", meta={"celery": {"task_id": "x"}}), Job("proj.tasks.add")
    ref = app.push_sync(native_job)
    record = app.get_job_sync(ref)
    celery_record = dataclasses.replace(record, meta={"celery": {"task_id": "x"}})
    CeleryInstrumentor().instrument(tracer_provider=otel.tracer_provider)
    try:
        with instrumented.pushing([celery_job, native_job]) as push:
            assert CARRIER not in push.jobs[0].meta and CARRIER in push.jobs[1].meta
        instrumented.observe_run(celery_record)(execution.Outcome.success(record.id, None))
    finally:
        CeleryInstrumentor().uninstrument()
    with instrumented.pushing([celery_job]) as push:  # Celery's instrumentor off: ours spans it
        assert CARRIER in push.jobs[0].meta
    instrumented.observe_run(celery_record)(execution.Outcome.success(record.id, None))
    names = [span.name for span in otel.exporter.get_finished_spans()]
    assert names == ["push proj.tasks.add"] * 3 + ["run proj.tasks.add"]  # push_sync, the mix, then Celery's
