"""Many hosts on one database (issue 24): one Postgres, a transaction-mode PgBouncer in front
of it, three worker hosts and a producer host, each in its own network namespace (so the
database sees four client addresses), workers started by the CLI as users run them, with
the pooler for statements and the session DSN straight to Postgres (docs/poolers.md).

A host is cut off mid-job (its link downed: packets vanish, no connection is reset, as
when a machine drops off the network). Its running jobs must be recovered and finished by
the other hosts within the documented time (docs/scaling.md: ``liveness_timeout`` plus a
recovery interval, and a leadership interval more when the lost host was the leader),
none lost and none recorded as succeeding twice; when its link comes
back, its late outcomes for jobs already finished elsewhere change nothing, and it serves
again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cluster_support import HERE, RestartablePostgres
from hosts_support import Host, Hosts, unavailable_reason
from pgbouncer_support import binary as pgbouncer_binary
from pgbouncer_support import transaction_pooler

_REASON = unavailable_reason() or (None if pgbouncer_binary() else "pgbouncer is not installed")
pytestmark = [pytest.mark.skipif(_REASON is not None, reason=f"many-hosts topology: {_REASON}"),
              pytest.mark.timeout(180)]

HEARTBEAT, LIVENESS = 0.5, 2.0
#: What docs/scaling.md promises for a lost worker host: its jobs are running elsewhere
#: within liveness_timeout + a recovery interval (0.5 s here) + a claim; the slack is for a
#: loaded test machine.
WORKER_RECOVERY_BOUND = LIVENESS + 0.5 + 6.0
#: For the leader's host, the others end its leadership session once it is past its
#: liveness timeout, then one of them takes the lock within a leadership interval (0.5 s),
#: rather than waiting 25 s for the server's keepalives to drop that session.
LEADER_RECOVERY_BOUND = WORKER_RECOVERY_BOUND + 0.5


@dataclass
class Topology:
    hosts: Hosts
    workers: list[Host]
    producer: Host
    dsn: str  # the test's own, over the unix socket
    pooler_port: int
    processes: dict[str, subprocess.Popen]
    logs: dict[str, Path]

    def env(self, host: Host) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "CHANCY_DSN": f"postgresql://postgres@{host.gateway}:{self.pooler_port}/restart_test",
                "CHANCY_SESSION_DSN": f"postgresql://postgres@{host.gateway}:5432/restart_test"}

    def start_worker(self, host: Host, tmp: Path) -> None:
        log = tmp / f"{host.name}.log"
        self.logs[host.name] = log
        with log.open("ab") as out:
            self.processes[host.name] = subprocess.Popen(
                host.command(sys.executable, "-m", "chancy.cli", "worker", "-A", "topology_app",
                             "-n", host.name, "-Q", f"default,{host.name}", "-l", "warning",
                             "--heartbeat-interval", str(HEARTBEAT), "--liveness-timeout", str(LIVENESS),
                             "--shutdown-timeout", "5"),
                env=self.env(host), stdout=out, stderr=subprocess.STDOUT)

    def push(self, queue: str, count: int) -> list[str]:
        out = subprocess.run(self.producer.command(sys.executable, "-m", "topology_producer", queue, str(count)),
                             env=self.env(self.producer), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.split()

    def output(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def wait(self, what: str, check, timeout: float) -> float:
        """Seconds until ``check()`` held; fails with the workers' output after ``timeout``."""
        start = time.monotonic()
        while not check():
            exited = [name for name, process in self.processes.items() if process.poll() is not None]
            if exited or time.monotonic() - start > timeout:
                logs = "\n".join(f"--- {name}\n{self.output(name)[-3000:]}" for name in self.logs)
                why = f"{', '.join(exited)} exited" if exited else f"not within {timeout:.0f}s"
                raise AssertionError(f"{why}: {what}\n{logs}")
            time.sleep(0.05)
        return time.monotonic() - start

    def live_workers(self) -> set[str]:
        return {row[0] for row in self.query("SELECT worker_id FROM chancy_workers WHERE expires_at > now()")}

    def leader(self) -> str | None:
        rows = self.query("SELECT application_name FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                          "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'chancy-leader:%%'")
        return rows[0][0].split(":", 1)[1] if rows else None

    def running_on(self, worker: str, started: bool = True) -> list[str]:
        """The jobs ``worker`` holds: those it started, or (``started=False``) those it
        claimed ahead and has not started (its prefetch)."""
        return [str(row[0]) for row in self.query(
            "SELECT id FROM chancy_jobs WHERE state = 'running' AND taken_by = %s AND (started_at IS NOT NULL) = %s",
            worker, started)]

    def rows(self, ids: list[str]) -> dict[str, tuple]:
        return {str(row[0]): row[1:] for row in self.query(
            "SELECT id, state, attempts, taken_by, result, completed_at, errors FROM chancy_jobs "
            "WHERE id = ANY(%s::uuid[])", ids)}


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with ExitStack() as stack:
        hosts = Hosts()
        stack.callback(hosts.close)
        workers = [hosts.add(name) for name in ("worker-1", "worker-2", "worker-3")]
        producer = hosts.add("producer")
        postgres = RestartablePostgres()
        stack.callback(postgres.close)
        # Postgres itself on each host's gateway address (the session DSN's leadership lock
        # and LISTEN must be real sessions), trusting only the hosts' network.
        postgres.stop_server()
        with open(postgres.server.base_dir / "data" / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {hosts.network} trust\n")
        postgres.start_server("listen_addresses=" + ",".join(host.gateway for host in hosts.hosts))
        subprocess.run([sys.executable, "-m", "chancy.cli", "migrate", "--dsn", postgres.dsn],
                       check=True, capture_output=True)
        pooled = stack.enter_context(transaction_pooler(postgres.dsn, listen_addr="*"))
        port = psycopg.conninfo.conninfo_to_dict(pooled)["port"]
        topo = Topology(hosts, workers, producer, postgres.dsn, int(port), {}, {})

        def stop_workers() -> None:
            for process in topo.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        stack.callback(stop_workers)
        for host in workers:
            topo.start_worker(host, tmp_path)
        topo.wait("all three workers heartbeating", lambda: topo.live_workers() >= {h.name for h in workers}, 60)
        topo.wait("a leader", lambda: topo.leader() is not None, 30)
        yield topo


def _cut_mid_job(topo: Topology, victim: Host, jobs: int) -> tuple[list[str], list[str], list[str]]:
    """Push ``jobs`` from the producer host; once the victim runs some, cut it off. The
    pushed ids, the ids it was running, and those it had claimed ahead (prefetched)."""
    ids = topo.push("default", jobs)
    topo.wait(f"{victim.name} running jobs", lambda: len(topo.running_on(victim.name)) >= 2, 30)
    topo.hosts.cut(victim)
    return ids, topo.running_on(victim.name), topo.running_on(victim.name, started=False)


def _assert_recovered(topo: Topology, victim: Host, ids: list[str], stranded: list[str], prefetched: list[str],
                      bound: float) -> dict:
    held = stranded + prefetched
    took = topo.wait(f"the {len(held)} jobs {victim.name} held finished by other hosts",
                     lambda: all(row[0] == "succeeded" for row in topo.rows(held).values()), bound)
    topo.wait("every pushed job succeeded", lambda: all(r[0] == "succeeded" for r in topo.rows(ids).values()), 30)
    rows = topo.rows(ids)
    assert len(rows) == len(ids), "jobs lost"
    for job_id in held:
        assert rows[job_id][2] != victim.name, (job_id, rows[job_id])
    for job_id in stranded:  # its attempt was used: lost with its worker
        state, attempts, taken_by, result, _, errors = rows[job_id]
        assert attempts == 2 and any("WorkerLost" in str(e) for e in errors), (job_id, rows[job_id])
    for job_id in prefetched:  # never started: handed back with the attempt refunded
        state, attempts, taken_by, result, _, errors = rows[job_id]
        assert attempts == 1 and errors == [], (job_id, rows[job_id])
    print(f"{victim.name} cut off: its {len(stranded)} running and {len(prefetched)} prefetched jobs "
          f"finished elsewhere after {took:.1f}s")
    return rows


def _assert_rejoins(topo: Topology, victim: Host, before: dict) -> None:
    """Back on the network: it heartbeats again, its stale outcomes change no row, it serves."""
    topo.hosts.restore(victim)
    topo.wait(f"{victim.name} heartbeating again", lambda: victim.name in topo.live_workers(), 60)
    mine = topo.push(victim.name, 4)
    topo.wait(f"{victim.name} running its own queue again",
              lambda: all(r[0] == "succeeded" and r[2] == victim.name for r in topo.rows(mine).values()), 60)
    time.sleep(1.0)  # its write-backs of the old jobs have had their chance
    assert topo.rows(list(before)) == before, "a late outcome of the cut-off host changed a finished row"
    assert topo.processes[victim.name].poll() is None, topo.output(victim.name)


def test_a_cut_off_worker_host_is_recovered_by_the_others_and_rejoins(topology: Topology) -> None:
    leader = topology.leader()
    victim = next(host for host in topology.workers if host.name != leader)
    ids, stranded, prefetched = _cut_mid_job(topology, victim, 60)
    assert stranded, "the victim ran nothing when cut off"
    rows = _assert_recovered(topology, victim, ids, stranded, prefetched, WORKER_RECOVERY_BOUND)
    _assert_rejoins(topology, victim, rows)


def test_a_cut_off_leader_host_hands_over_leadership_and_its_jobs(topology: Topology) -> None:
    leader = topology.leader()
    victim = next(host for host in topology.workers if host.name == leader)
    ids, stranded, prefetched = _cut_mid_job(topology, victim, 60)
    assert stranded, "the leader ran nothing when cut off"
    topology.wait("another leader", lambda: topology.leader() not in (None, victim.name), LEADER_RECOVERY_BOUND)
    rows = _assert_recovered(topology, victim, ids, stranded, prefetched, LEADER_RECOVERY_BOUND)
    _assert_rejoins(topology, victim, rows)
