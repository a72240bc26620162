"""The Celery-shaped part of the benchmark (``--only celery``) runs end to end at smoke
size: every worker drains its queue, every task is checked to have run once, and the
ratios and absolute targets of issue 27 are reported (the figures are not checked: a
benchmark is not a timed test)."""

from __future__ import annotations

import json
import shutil

from benchmarks.__main__ import main
from benchmarks.celery_peers import REDIS_MISSING


def test_celery_part_runs_at_smoke_size(pg_admin_dsn, tmp_path, capsys):
    run = main(["--smoke", "--dsn", pg_admin_dsn, "--only", "celery", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    chancy_figures = {"celery.prefork_chancy", "chancy.sync_process", "chancy.sync_thread",
                      "chancy.sync_process_cpu", "chancy.sync_thread_cpu", "compat.result_get_finished"}
    redis_figures = {"celery.prefork_redis", "celery.threads_redis"}
    assert chancy_figures <= set(run.figures)
    [saved] = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    limits = {row["key"] for row in saved["limits"]}
    assert limits == {"chancy.sync_process_cpu", "chancy.sync_thread_cpu", "compat.result_get_finished"}
    if shutil.which("redis-server"):
        assert redis_figures <= set(run.figures)
        assert {row["label"] for row in saved["ratios"]} >= {
            "chancy process / Celery prefork (Redis)", "chancy thread / Celery threads (Redis)",
            "Celery prefork on Chancy's broker + backend / on Redis"}
        assert "chancy process / Celery prefork (Redis)" in out
    else:
        assert not redis_figures & set(run.figures)
        assert REDIS_MISSING in saved["notes"] and "apt-get install redis-server" in out
