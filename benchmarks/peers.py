"""Peers (procrastinate, pgqueuer) on the same server and workloads, when installed."""

from __future__ import annotations

from benchmarks.harness import Run


async def measure(run: Run) -> None:
    run.notes.append("peers: not measured yet")
