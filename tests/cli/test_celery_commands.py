"""The Celery-shaped commands (call, result, inspect, beat) and Celery's worker settings,
as a user runs them: against a real database, with real workers where they matter."""

from __future__ import annotations

import json
import socket
import time
import uuid

import psycopg

from cli_helpers import background, stop

from chancy.cli.worker import expand_node_name


def test_call_and_inspect_registered_check_their_input_before_sending(cli_run, chancy):
    no_db = {"dsn_arg": None}  # all of these are refused (or answered) before connecting
    # (a Celery app makes itself the current app: load one in a subprocess, not in the tests')
    typo = cli_run("call", "-A", "cli_tasks", "cli_tasks.ad", **no_db)
    assert typo.code == 6 and "did you mean cli_tasks.add?" in typo.err and "--force" in typo.err
    celery_typo = chancy("call", "-A", "cli_celery", "cli_celery.ad", "-a", "[1, 2]", **no_db)
    assert celery_typo.code == 6 and "did you mean cli_celery.add?" in celery_typo.err
    for bad in (["-a", "{not json"], ["-a", '{"a": 1}'], ["-k", "[1]"], ["--eta", "tomorrow"],
                ["--expires", "soon"], ["--countdown", "5", "--eta", "2030-01-01T00:00:00"]):
        assert cli_run("call", "cli_tasks.add", *bad, **no_db).code == 2, bad

    native = cli_run("inspect", "registered", "-A", "cli_tasks", **no_db)
    assert native.code == 0 and native.out.startswith("-> cli_tasks: OK\n    * cli_tasks.add\n")
    celery = chancy("inspect", "registered", "-A", "cli_celery", "-j", **no_db).json()
    assert celery == {"cli_celery": ["cli_celery.add", "cli_celery.explode", "cli_celery.renamed"]}
    assert cli_run("inspect", "registered", **no_db).code == 2  # no -A: no code to read names from
    assert cli_run("inspect", "registered", "-A", "cli_tasks", "-d", "w1", **no_db).code == 2


def test_call_result_and_inspect_with_a_running_worker(migrated, cli_run, dsn, tmp_path):
    later = cli_run("call", "cli_tasks.add", "-a", "[1, 2]", "--countdown", "600", "-Q", "other")
    assert later.code == 0, later.err
    later_id = later.out.strip()
    scheduled = cli_run("inspect", "scheduled", "-j").json()
    assert [(e["request"]["id"], e["request"]["args"]) for e in scheduled["other"]] == [(later_id, [1, 2])]
    assert "-> queue other: OK" in cli_run("inspect", "scheduled").out
    not_yet = cli_run("result", later_id)
    assert not_yet.code == 1 and "PENDING (scheduled)" in not_yet.out and "not finished" in not_yet.out
    assert cli_run("result", str(uuid.uuid4())).code == 6
    assert cli_run("inspect", "ping").code == 6  # no worker yet

    release = tmp_path / "release"
    node = f"inspect@{socket.gethostname()}"  # Celery's -n expansion, as a probe's -d names it
    with background(["worker", "-A", "cli_tasks", "-Q", "default", "-c", "3", "-P", "thread", "-n", "inspect@%h",
                     "--dsn", dsn]) as worker:
        held = cli_run("call", "cli_tasks.hold", "-a", json.dumps([str(release)])).out.strip()
        added = cli_run("call", "cli_tasks.add", "-k", '{"a": 2, "b": 3}').out.strip()
        failed = cli_run("call", "cli_tasks.explode", "-a", '["boom-9"]', "--max-attempts", "1").out.strip()
        done = cli_run("result", added, "--timeout", "30")
        assert (done.code, done.out) == (0, "5\n")

        deadline = time.monotonic() + 30
        while not (active := cli_run("inspect", "active", "-j").json())[node]:
            assert time.monotonic() < deadline, "the held job never showed as running"
        [job] = active[node]
        assert (job["id"], job["name"], job["args"], job["attempt"]) == (held, "cli_tasks.hold", [str(release)], 1)
        human = cli_run("inspect", "active")
        assert human.out.startswith(f"-> {node}: OK\n    * {held} cli_tasks.hold(") and "1 node online." in human.out
        assert cli_run("inspect", "active", "-Q", "other").code == 6  # no worker serves it
        pong = cli_run("inspect", "ping", "-d", node, "-t", "5")
        assert pong.code == 0 and f"-> {node}: OK\n        pong" in pong.out
        assert cli_run("inspect", "ping", "-d", "nobody").code == 6
        stats = cli_run("inspect", "stats", "-j").json()[node]
        assert stats["queues"] == ["default"] and stats["running"] == 1 and stats["pid"] > 0
        assert cli_run("inspect", "reserved", "-j").json() == {node: []}
        [row] = cli_run("status", "-j").json()["workers"]
        assert (row["worker_id"], row["running"], row["running_jobs"]) == (node, 1, [held])

        release.touch()
        assert cli_run("result", held, "--wait").code == 0
        failure = cli_run("result", failed, "--timeout", "30")
        assert failure.code == 1 and "FAILURE (failed), attempt 1 of 1" in failure.out
        assert "RuntimeError: boom-9" in failure.out
        traceback = cli_run("result", failed, "--traceback")
        assert traceback.code == 1 and traceback.out.startswith("Traceback") and "boom-9" in traceback.out
        assert cli_run("result", failed, "-j").json()["celery_state"] == "FAILURE"
        assert stop(worker)[0] == 0


def test_inspect_timeout_bounds_the_wait_for_a_database_that_does_not_answer(migrated, cli_run, dsn):
    """``-t`` as in a liveness probe: a blocked database fails the probe in bounded time
    (exit 4) instead of hanging it."""
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE chancy_workers IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        probe = cli_run("inspect", "ping", "-t", "0.5")
        assert probe.code == 4, probe.err
        assert time.monotonic() - started < 5
        assert "did not answer within 0.5s" in probe.err
    assert cli_run("inspect", "ping", "-t", "0").code == 2  # not a usable timeout


def test_worker_names_expand_as_celery_does():
    assert expand_node_name("celery@%h", "web-1.example.com") == "celery@web-1.example.com"
    assert expand_node_name("%n-worker.%d", "web-1.example.com") == "web-1-worker.example.com"
    assert expand_node_name("plain", "host") == "plain"


def test_worker_max_tasks_per_child_setting_replaces_process_children(migrated, dsn):
    """``worker_max_tasks_per_child = 2`` in the Celery app's configuration, no flag."""
    with background(["worker", "-A", "cli_celery", "-P", "prefork", "-c", "1", "--dsn", dsn]) as process:
        pids = [migrated("push", "-A", "cli_celery", "cli_celery.renamed", "--wait", "60", "--json").json()["result"]
                for _ in range(3)]
        assert pids[0] == pids[1] != pids[2]
        assert stop(process)[0] == 0


def _answers(cli_run) -> list[str]:
    """The unique keys of the jobs the "answer" schedule has pushed so far."""
    return [job["unique_key"] for job in cli_run("jobs", "list", "-n", "1000", "--json").json()
            if (job["unique_key"] or "").startswith("cron:celery:answer:")]


def test_beat_syncs_the_schedule_and_fires_it_once_per_tick_beside_a_worker(migrated, cli_run, dsn):
    once = migrated("beat", "-A", "cli_celery_beat", "--once", "-j")
    assert once.code == 0, once.err
    assert "synced 2 beat_schedule entries" in once.err
    schedules = {s["name"]: s for s in once.json()}
    assert schedules.keys() == {"celery:answer", "celery:nightly"}
    assert schedules["celery:nightly"]["cron"] == "0 3 * * *" and schedules["celery:answer"]["every"] == 0.3
    assert schedules["celery:answer"]["next_run"] and _answers(cli_run) == []  # --once fires nothing

    def wait_for_answers(count: int) -> None:
        deadline = time.monotonic() + 30
        while len(_answers(cli_run)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} ticks fired in 30s"

    with background(["beat", "-A", "cli_celery_beat", "--dsn", dsn]) as beat:
        wait_for_answers(2)  # beat alone fires
        # Next to a worker (whose leader fires too), each tick is still pushed once.
        with background(["worker", "-A", "cli_celery_beat", "-P", "threads", "--dsn", dsn]) as worker:
            # (call in a subprocess: importing cli_celery here would make it the tests' current app)
            cli_run("result", migrated("call", "cli_celery.add", "-a", "[0, 0]", "-Q", "celery").out.strip(),
                     "--timeout", "30")  # the worker is up
            wait_for_answers(len(_answers(cli_run)) + 3)
            assert stop(worker)[0] == 0
        code, output = stop(beat)
        assert code == 0 and "chancy beat: stopped" in output, output
    keys = _answers(cli_run)
    assert len(keys) == len(set(keys)), "a tick was pushed twice"
    assert migrated("beat", "--once").code == 0  # without -A: the stored schedules, nothing to sync


def test_inspect_reserved_lists_the_jobs_a_worker_claimed_ahead(migrated, cli_run, dsn, tmp_path):
    """With one slot busy, the worker's prefetch holds the next jobs without starting them:
    `inspect reserved` lists those, `inspect active` only the started one (as Celery's)."""
    release = tmp_path / "release"
    node = f"reserve@{socket.gethostname()}"
    with background(["worker", "-A", "cli_tasks", "-Q", "default", "-c", "1", "-P", "thread", "-n", "reserve@%h",
                     "--prefetch-multiplier", "4", "--dsn", dsn]):
        held = cli_run("call", "cli_tasks.hold", "-a", json.dumps([str(release)])).out.strip()
        deadline = time.monotonic() + 30
        while (active := cli_run("inspect", "active", "-j")).code != 0 or not active.json().get(node):
            assert time.monotonic() < deadline, "the held job never started"
        waiting = {cli_run("call", "cli_tasks.add", "-a", f"[{n}, 1]").out.strip() for n in range(2)}
        while {job["id"] for job in cli_run("inspect", "reserved", "-j").json().get(node, [])} != waiting:
            assert time.monotonic() < deadline, cli_run("inspect", "reserved", "-j").out
        assert [job["id"] for job in cli_run("inspect", "active", "-j").json()[node]] == [held]
        human = cli_run("inspect", "reserved").out
        assert human.startswith(f"-> {node}: OK\n") and "cli_tasks.add(" in human and "started" not in human
        release.touch()
        for job_id in waiting:
            assert cli_run("result", job_id, "--timeout", "30").code == 0
        assert cli_run("inspect", "reserved", "-j").json() == {node: []}
