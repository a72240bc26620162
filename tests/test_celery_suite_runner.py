"""The parsing and report logic of external/celery_suite/run.py (issue 25), without running
Celery's suite: folding the overlay's records, the Redis-gate detection, the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "external" / "celery_suite" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("celery_suite_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def rec(event, **kw):
    return json.dumps({"event": event, **kw})


def report(node, when, outcome, reason="", xfail=False):
    return rec("report", nodeid=node, when=when, outcome=outcome, reason=reason, xfail=xfail, duration=0.1)


A, B, C, D = (f"t/integration/test_x.py::test_k::test_{n}" for n in "abcd")


def test_fold_outcomes_reruns_teardown_and_timeouts(run):
    lines = [
        rec("collected", nodeids=[A, B, C, D]),
        rec("start", nodeid=A), report(A, "call", "rerun", "TimeoutError: x"), report(A, "call", "passed"),
        rec("start", nodeid=B), report(B, "setup", "error", "ConnectionError: refused"),
        rec("start", nodeid=C), report(C, "call", "passed"), report(C, "teardown", "error", "boom"),
        "{\"event\": \"rep",  # a line cut by a kill
    ]
    statuses, reasons = run.fold_records(lines)
    assert statuses == {A: "passed", B: "error", C: "error", D: "not run"}
    assert reasons[B] == "ConnectionError: refused" and reasons[C] == "teardown: boom"
    assert A not in reasons


def test_fold_killed_run_marks_running_test_as_timeout(run):
    lines = [rec("collected", nodeids=[A, B]), rec("start", nodeid=A)]
    statuses, reasons = run.fold_records(lines, killed=True)
    assert statuses == {A: "timeout", B: "not run"}
    assert "time limit" in reasons[A]


def test_fold_pytest_timeout_and_skip(run):
    lines = [report(A, "call", "failed", "Failed: Timeout (>90.0s) from pytest-timeout."),
             report(B, "setup", "skipped", "Requires redis result backend."),
             report(C, "call", "skipped", "xfail reason", xfail=True)]
    statuses, _ = run.fold_records(lines)
    assert statuses == {A: "timeout", B: "skipped", C: "skipped"}


SOURCE = '''
class test_plain:
    def test_gate_only(self, manager):
        if not manager.app.conf.result_backend.startswith('redis'):
            raise pytest.skip('Requires redis result backend.')
        assert chord_thing()

    def test_side(self, manager):
        if not manager.app.conf.result_backend.startswith("redis"):
            raise pytest.skip("Requires redis result backend.")
        redis_connection = get_redis_connection()

    def test_free(self, manager):
        pass


class test_fixture_gated:
    @pytest.fixture
    def manager(self, manager):
        if not manager.app.conf.result_backend.startswith('redis'):
            raise pytest.skip('Requires redis result backend.')
        return manager

    def test_one(self, manager):
        get_active_redis_channels()


def test_top(manager):
    if not manager.app.conf.result_backend.startswith('redis'):
        pass
'''


def test_gated_in_source(run):
    assert run.gated_in_source(SOURCE) == {
        "test_plain::test_gate_only": False,
        "test_plain::test_side": True,
        "test_fixture_gated::test_one": True,
        "test_top": False,
    }


def test_redis_gate_rewrite_for_the_probe(run):
    text = "if not manager.app.conf.result_backend.startswith('redis'):"
    assert run.REDIS_GATE.sub(run.open_gate, text) == (
        "if not manager.app.conf.result_backend.startswith(('redis', 'chancy')):")
    text = 'if not manager.app.conf.result_backend.startswith(("redis", "rpc")):'
    assert run.REDIS_GATE.sub(run.open_gate, text) == (
        "if not manager.app.conf.result_backend.startswith(('redis', 'rpc', 'chancy')):")
    assert run.REDIS_GATE.search("if manager.app.conf.result_backend.startswith('rpc'):") is None


def test_pinned_reads_requirements(run, tmp_path):
    reqs = tmp_path / "test.txt"
    reqs.write_text("pytest==9.1.1\npytest-rerunfailures==16.7  # flaky\npytest-timeout==2.4.0\n")
    assert run.pinned(reqs, "pytest-rerunfailures") == "pytest-rerunfailures==16.7"
    assert run.pinned(reqs, "pytest") == "pytest==9.1.1"
    assert run.pinned(reqs, "redis") is None


def test_report_table_and_difference(run):
    red = run.FileRun("redis", "test_x.py", {A: "passed", B: "passed", C: "failed"}, {C: "oops"})
    chy = run.FileRun("chancy", "test_x.py", {A: "passed", B: "skipped", C: "passed"},
                      {B: "Requires redis result backend."}, note="")
    probe = run.FileRun("chancy-probe", "test_x.py", {B: "failed"}, {B: "TimeoutError: | late"})
    text = run.render_report([red, chy, probe], celery_version="9.9", targets=["redis", "chancy", "chancy-probe"],
                             files=["test_x.py"], timings={"redis": 60.0}, notes=["n"],
                             gated={"test_x.py": {"test_k::test_b": False}})
    assert "| test_x.py | **2**/3 · 1 · 0 · 0 · 0 · 0 | **2**/3 · 0 · 0 · 1 · 0 · 0 |" in text
    assert "## test_x.py: 1 pass on Redis and not on Chancy" in text
    assert "- `test_k::test_b` — **skipped**: Requires redis result backend." in text
    assert "Pass on Chancy and not on Redis: `test_k::test_c`" in text
    assert "| `test_k::test_b` | no | passed | skipped | failed | TimeoutError: / late |" in text
    assert "redis 1.0 min" in text


def test_fold_keeps_the_first_failed_subtest_reason(run):
    lines = [rec("subtest", nodeid=A, outcome="failed", reason="[chain] TaskIdInUse: x"),
             rec("subtest", nodeid=A, outcome="failed", reason="[group] TimeoutError"),
             report(A, "call", "failed", "contains 2 failed subtests")]
    statuses, reasons = run.fold_records(lines)
    assert statuses == {A: "failed"}
    assert reasons[A] == "contains 2 failed subtests: first: [chain] TaskIdInUse: x (+1 more)"
