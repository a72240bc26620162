"""The benchmark suite still runs end to end (tiny sizes; the figures are not checked:
a benchmark is not a timed test)."""

from __future__ import annotations

import json

from benchmarks.__main__ import main
from benchmarks.report import markdown


def test_suite_runs_at_smoke_size(pg_admin_dsn, tmp_path, capsys):
    run = main(["--smoke", "--dsn", pg_admin_dsn, "--only", "raw", "enqueue", "drain", "latency",
                "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ratio" in out and "push_sync / raw INSERT loop" in out
    expected = {"raw.insert_loop", "raw.copy", "raw.claim100_300", "chancy.push_sync", "chancy.push_many",
                "raw.insert_loop_concurrent", "chancy.push_sync_concurrent",
                "raw.job_insert_loop", "raw.chancy_statements_300",
                "chancy.drain_scaled", "chancy.drain_analyzed_backlog", "chancy.rss_scheduled", "chancy.latency_p99"}
    assert expected <= set(run.figures)
    # CPU time is counted in 10 ms ticks: a smoke-sized drain may take less than one.
    assert all(value > 0 or (key.endswith("_cpu") and value == 0)
               for key, figure in run.figures.items() for value in figure.samples)
    [result] = tmp_path.glob("*.json")
    saved = json.loads(result.read_text())
    assert saved["environment"]["machine"]["cores"] >= 1
    assert {row["label"] for row in saved["ratios"]} >= {
        "push_many / raw COPY", "drain 300 asyncio / raw claim-100 of 300",
        "Chancy's own INSERT statement loop / raw INSERT loop", "drain 300 asyncio / Chancy's own statements, 300"}
    table = markdown(saved)
    assert "| push_many / raw COPY |" in table and "| chancy: pickup latency p99 |" in table
