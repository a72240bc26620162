"""A pytest plugin loaded (``-p overlay``) into each run of Celery's integration suite.

It changes nothing in Celery's test files. It only:

* records every test's outcome, as it happens, one JSON object a line, in the file named
  by ``CELERY_SUITE_RESULTS`` (flushed each line, so a run killed by the file timeout still
  leaves what it had done), with a one-line reason for each failure and skip;
* caps the suite's own ``@flaky`` markers (``timeout=300``, ``reruns=5``) at
  ``CELERY_SUITE_TEST_TIMEOUT`` seconds and ``CELERY_SUITE_RERUNS`` reruns, so one test
  that hangs on a broker cannot hold CI for half an hour.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

_RESULTS = os.environ.get("CELERY_SUITE_RESULTS")
_TIMEOUT = os.environ.get("CELERY_SUITE_TEST_TIMEOUT")
_RERUNS = os.environ.get("CELERY_SUITE_RERUNS")


def _write(record: dict) -> None:
    if not _RESULTS:
        return
    record["t"] = round(time.time(), 3)
    with open(_RESULTS, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _TIMEOUT:
            cap = float(_TIMEOUT)
            marker = item.get_closest_marker("timeout")
            current = marker.kwargs.get("timeout", marker.args[0] if marker and marker.args else None) if marker else None
            if current is None or float(current) > cap:
                # Prepended markers are the closest: pytest-timeout reads this one.
                item.add_marker(pytest.mark.timeout(timeout=cap), append=False)
        if _RERUNS is not None:
            marker = item.get_closest_marker("flaky")
            if marker is not None and marker.kwargs.get("reruns", 0) > int(_RERUNS):
                kwargs = dict(marker.kwargs, reruns=int(_RERUNS))
                item.add_marker(pytest.mark.flaky(*marker.args, **kwargs), append=False)
    _write({"event": "collected", "nodeids": [item.nodeid for item in items]})


def _where(report) -> str:
    """``test_canvas.py:123``: the deepest frame in Celery's test files, if any."""
    entries = getattr(getattr(report.longrepr, "reprtraceback", None), "reprentries", None) or []
    for entry in reversed(entries):
        loc = getattr(entry, "reprfileloc", None)
        if loc is not None and re.search(r"t/integration/\w+\.py$", loc.path.replace(os.sep, "/")):
            return f"{os.path.basename(loc.path)}:{loc.lineno}"
    return ""


def one_line(report) -> str:
    """The one-line reason of a failed or skipped report."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # a skip: (path, lineno, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ").strip()
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # "assert x == y" messages put the useful part on the first line; "E   " prefixes are gone here.
    line = lines[0] if lines else ""
    where = _where(report)
    return (f"{line[:300]} [{where}]" if where else line[:300])


def pytest_runtest_logreport(report):
    outcome = report.outcome
    if hasattr(report, "context") and type(report).__name__ == "SubtestReport":
        # One subtest of a test (pytest's subtests): its failure reason says more than the
        # test's own "contains N failed subtests".
        if outcome == "failed":
            label = getattr(report.context, "msg", None) or ", ".join(
                f"{k}={v!r}" for k, v in (getattr(report.context, "kwargs", None) or {}).items())
            _write({"event": "subtest", "nodeid": report.nodeid, "outcome": outcome,
                    "reason": (f"[{label}] " if label else "") + one_line(report)})
        return
    if outcome == "passed" and report.when != "call":
        return
    if outcome == "failed" and report.when != "call":
        outcome = "error"
    if report.when == "teardown" and outcome == "skipped":
        return
    _write({
        "event": "report",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": outcome,  # passed | failed | skipped | error | rerun
        "xfail": bool(getattr(report, "wasxfail", "")),
        "reason": one_line(report) if outcome != "passed" else "",
        "duration": round(report.duration, 2),
    })


def pytest_runtest_logstart(nodeid, location):
    _write({"event": "start", "nodeid": nodeid})
