"""Helpers of the cluster proof tests: worker processes, a success audit, accounting."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))


def seed_from_env(name: str) -> int:
    """A seed from CHANCY_TEST_SEED or a fresh one; printed so a failure can be replayed."""
    seed = int(os.environ.get("CHANCY_TEST_SEED") or random.randrange(2**32))
    print(f"{name}: seed {seed} (replay with CHANCY_TEST_SEED={seed})")
    return seed


class WorkerProcess:
    """One ``python -m cluster_worker`` child; its output goes to a temp file (a pipe nobody
    reads could fill and block the worker)."""

    def __init__(self, dsn: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
               # The jobs are plain functions of cluster_tasks, run only from modules allowed.
               "CHANCY_ALLOWED_IMPORTS": f"cluster_tasks,{os.environ.get('CHANCY_ALLOWED_IMPORTS', '')}"}
        self.log = tempfile.NamedTemporaryFile("w+", prefix="chancy-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cluster_worker", dsn, *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def worker_id(self, timeout: float = 20.0) -> str:
        """The id it printed once ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if line.startswith("ready "):
                    return line.split()[1]
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.pid} exited during start:\n{self.output()}")
            time.sleep(0.02)
        raise AssertionError(f"worker {self.pid} not ready within {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (drain) and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker {self.pid} did not stop within {timeout}s:\n{self.output()}")

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


def install_success_audit(dsn: str, prefix: str = "chancy_") -> None:
    """Record every transition into ``succeeded``: a job must appear exactly once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE success_audit (job_id uuid NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute(
            """
            CREATE FUNCTION audit_success() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO success_audit (job_id) VALUES (NEW.id); RETURN NEW; END $$
            """
        )
        conn.execute(
            f"CREATE TRIGGER audit_success AFTER UPDATE OF state ON {prefix}jobs FOR EACH ROW "
            "WHEN (NEW.state = 'succeeded' AND OLD.state IS DISTINCT FROM 'succeeded') "
            "EXECUTE FUNCTION audit_success()"
        )


def success_counts(dsn: str) -> Counter:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return Counter({row[0]: row[1] for row in
                        conn.execute("SELECT job_id, count(*) FROM success_audit GROUP BY job_id")})


def states(dsn: str) -> Counter:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return Counter(dict(conn.execute("SELECT state, count(*) FROM chancy_jobs GROUP BY state").fetchall()))


class RestartablePostgres:
    """A private throwaway server (not the session's shared one) that a test can stop and
    start again on the same data directory and socket.

    ``chancy.embedded`` offers no restart, so this starts the postmaster again the way
    ``start_throwaway_server`` does, with that module's helpers."""

    def __init__(self) -> None:
        from chancy import embedded

        self._embedded = embedded
        self.server = embedded.start_throwaway_server()
        self.dsn = self.server.create_database("restart_test")
        self._restarted: subprocess.Popen | None = None

    def stop_server(self) -> None:
        """Fast shutdown (SIGINT): every session is disconnected, as on a real restart."""
        import psutil

        if self._restarted is not None:
            self._restarted.send_signal(signal.SIGINT)
            self._restarted.wait(30)
            return
        os.kill(self.server.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if psutil.Process(self.server.pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)
        raise AssertionError("Postgres did not stop within 30 s")

    def start_server(self, *settings: str) -> None:
        """Start the postmaster again; ``settings`` are extra ``name=value`` options."""
        from pathlib import Path

        e = self._embedded
        run_as = e._server_user()
        base = Path(self.server.base_dir)
        log_path = base / "postgres-restarted.log"
        with log_path.open("ab") as log:
            self._restarted = subprocess.Popen(
                [e._bindir_for(run_as)["postgres"], "-D", str(base / "data"), *e._server_args(base, fast=True),
                 *(arg for setting in settings for arg in ("-c", setting))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=e._server_env(),
                cwd=base, preexec_fn=e._die_with_parent(), start_new_session=True, **run_as.popen_kwargs(),
            )
        process = self._restarted
        e._wait_ready(self.server.dsn, log_path, lambda: process.poll() is not None, 30)

    def close(self) -> None:
        if self._restarted is not None and self._restarted.poll() is None:
            self._restarted.send_signal(signal.SIGINT)
            self._restarted.wait(30)
        self.server.stop()


UNFINISHED = frozenset({"pending", "scheduled", "retrying", "running"})

# A piece of the text of both claim statements (chancy/store/pg/sql/jobs.sql: the claim alone, and
# a write-back with the next claim) and of no other statement the workers of these tests
# send: what ``FaultProxy.drop_reply_after`` watches for to lose a claim's answer.
CLAIM_SQL = b"SELECT * FROM claimed"


def settle(dsn: str, timeout: float) -> Counter:
    """The state counts once no job is left unfinished, or at the timeout, whichever comes
    first: the caller asserts on them, so a job stranded in ``running`` is named there."""
    deadline = time.monotonic() + timeout
    while (counts := states(dsn)).keys() & UNFINISHED and time.monotonic() < deadline:
        time.sleep(0.1)
    return counts


def missing_jobs(dsn: str, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The ids among ``ids`` that have no row: pushed jobs that were lost."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = {row[0] for row in conn.execute("SELECT id FROM chancy_jobs")}
    return set(ids) - present


def assert_each_success_recorded_once(dsn: str) -> Counter:
    """The success audit's counts, after checking that no job succeeded twice."""
    successes = success_counts(dsn)
    twice = {job_id: n for job_id, n in successes.items() if n > 1}
    assert not twice, f"{len(twice)} jobs succeeded more than once, e.g. {list(twice.items())[:5]}"
    return successes


def jobs_with_lost_attempts(dsn: str) -> int:
    """Jobs that finished after at least one failed or lost attempt: what the faults cost."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM chancy_jobs WHERE errors <> '[]'").fetchone()[0]


def running_by_worker(dsn: str) -> Counter:
    """How many ``running`` jobs each worker id holds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return Counter(dict(conn.execute(
            "SELECT taken_by, count(*) FROM chancy_jobs WHERE state = 'running' GROUP BY taken_by").fetchall()))
