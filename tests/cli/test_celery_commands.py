"""The Celery-shaped commands (call, result, inspect, beat) and Celery's worker settings,
as a user runs them: subprocesses against a real database."""

from __future__ import annotations

from cli_helpers import background, stop


def test_worker_max_tasks_per_child_setting_replaces_process_children(migrated, dsn):
    """``worker_max_tasks_per_child = 2`` in the Celery app's configuration, no flag."""
    with background(["worker", "-A", "cli_celery", "-P", "prefork", "-c", "1", "--dsn", dsn]) as process:
        pids = [migrated("push", "-A", "cli_celery", "cli_celery.renamed", "--wait", "60", "--json").json()["result"]
                for _ in range(3)]
        assert pids[0] == pids[1] != pids[2]
        assert stop(process)[0] == 0
