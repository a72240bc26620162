"""The sizing (``scale``) and per-key concurrency (``keys``) parts of the benchmark run at
smoke size: every figure measured, every ratio computed."""

from __future__ import annotations

from benchmarks.__main__ import main


def test_scale_and_keys_parts_run_at_smoke_size(pg_admin_dsn, tmp_path):
    run = main(["--smoke", "--dsn", pg_admin_dsn, "--only", "scale", "keys", "--results", str(tmp_path)])
    for workers in (1, 2):
        for figure in ("rate", "backends", "worker_cpu", "db_cpu"):
            assert f"scale.w{workers}_{figure}" in run.figures
        assert run.figures[f"scale.w{workers}_rate"].median > 0
        assert run.figures[f"scale.w{workers}_backends"].median >= 3  # a worker's own sessions at least
    assert {"keys.drain_plain", "keys.drain_keyed"} <= set(run.figures)
    labels = {row["label"] for row in run.ratio_rows()}
    assert "drain, 2 worker processes / 1" in labels
    assert any("1,000 keys limit 1 / no key" in label for label in labels)
