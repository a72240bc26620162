"""``chancy worker --metrics-port``: one worker (a queue per pool) serves its metrics for
Prometheus, and its JSON log lines (the process-pool child's too) carry the job context."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

import obs_tasks
from chancy import Job, JobState
from obs_tasks import QUEUES

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(dsn: str, *flags: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CHANCY_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "chancy.cli", "worker", "-A", "obs_tasks", "--dsn", dsn, *flags],
                            cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _samples(port: int, worker: subprocess.Popen, timeout: float = 60) -> dict[tuple[str, tuple], float]:
    """Scrape the worker (waiting for it to listen): each sample by name and labels."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            break
        except OSError:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_worker_metrics_port_and_job_context_in_json_logs_under_every_pool(app, tmp_path):
    port = _free_port()
    worker = _worker(app.dsn, "--log-format", "json", "--metrics-port", str(port))
    try:
        await asyncio.to_thread(_samples, port, worker)  # it listens, so it started
        markers = {pool: f"m-{pool}-{uuid.uuid4().hex[:6]}" for pool in QUEUES}
        refs = [await app.push(Job(obs_tasks.log_marker, args=[markers[pool]], queue=queue))
                for pool, queue in QUEUES.items()]
        refs += [await app.push(Job(obs_tasks.fail, args=["no"], queue=queue)) for queue in QUEUES.values()]
        records = [await ref.wait(timeout=90) for ref in refs]
        assert [r.state for r in records] == [JobState.SUCCEEDED] * 3 + [JobState.FAILED] * 3
        release = tmp_path / "release"
        held = await app.push(Job(obs_tasks.wait_for_file, args=[str(release)], queue=QUEUES["process"]))
        in_flight = {}
        deadline = time.monotonic() + 60
        while _value(in_flight, "chancy_worker_jobs_in_flight", queue=QUEUES["process"],
                     task=obs_tasks.wait_for_file.name) != 1:
            assert time.monotonic() < deadline, in_flight
            in_flight = await asyncio.to_thread(_samples, port, worker)
            await asyncio.sleep(0.05)
        release.touch()
        assert (await held.wait(timeout=60)).state is JobState.SUCCEEDED
        samples = await asyncio.to_thread(_samples, port, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output

    marker, fail = obs_tasks.log_marker.name, obs_tasks.fail.name
    for queue in QUEUES.values():
        assert _value(samples, "chancy_worker_job_runs_total", queue=queue, task=marker, outcome="succeeded") == 1
        assert _value(samples, "chancy_worker_job_runs_total", queue=queue, task=fail, outcome="failed") == 1
        assert _value(samples, "chancy_worker_job_failures_total", queue=queue, task=fail) == 1
        assert _value(samples, "chancy_worker_job_failures_total", queue=queue, task=marker) == 0
        for histogram in ("chancy_worker_job_duration_seconds", "chancy_worker_job_queue_lag_seconds"):
            assert _value(samples, f"{histogram}_count", queue=queue, task=fail) == 1
            assert _value(samples, f"{histogram}_bucket", queue=queue, task=fail, le="+Inf") == 1
    assert _value(samples, "chancy_worker_job_duration_seconds_count", queue=QUEUES["process"],
                  task=obs_tasks.wait_for_file.name) == 1
    assert not [key for key, value in samples.items() if key[0] == "chancy_worker_jobs_in_flight" and value]

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for (pool, queue), record in zip(QUEUES.items(), records):
        [line] = [line for line in lines if line["message"] == f"marker {markers[pool]}"]
        assert {k: line.get(k) for k in ("job_id", "task", "queue", "attempt", "logger")} == {
            "job_id": str(record.id), "task": marker, "queue": queue, "attempt": 1, "logger": "obs_tasks"}, pool


def test_a_taken_metrics_port_is_refused_clearly(app):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = _worker(app.dsn, "--metrics-port", str(port))
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 3, output
    assert f"--metrics-port {port}: cannot listen there" in output and "choose a free port" in output
