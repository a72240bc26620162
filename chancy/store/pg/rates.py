"""The statements of task rate limits (see :mod:`chancy.rate_limits`): one row per
rate-limited task holding its recent start times, and the gate a worker runs on the jobs
of such tasks right after claiming them. The statements are in ``sql/rates.sql``."""

from __future__ import annotations

from typing import Mapping, Sequence

from chancy.job import JobRecord
from chancy.migrations import Names
from chancy.queue import Verdict
from chancy.store.pg.statements import SqlFile, Statement, Steps
from chancy.rate_limits import RateLimit, gate_order, waited


def _verdict(rows: list[tuple]) -> Verdict:
    admitted = frozenset(row[0] for row in rows if row[1] == "run")
    waits = [row[2] for row in rows if row[1] == "wait"]
    unknown = frozenset(row[3] for row in rows if row[1] == "unknown")
    return Verdict(admitted, max(0.0, min(waits)) if waits else None, unknown)


class RateSQL:
    """The statements of ``sql/rates.sql`` for one table prefix, composed once."""

    def __init__(self, names: Names) -> None:
        self.statements = SqlFile("rates.sql", names.fields())

    def ensure(self, tasks: Sequence[str]) -> Statement:
        """Create the rows of tasks never gated before in this database."""
        return Statement(self.statements["ensure"], {"tasks": list(tasks)})

    def gate(self, worker_id: str, records: Sequence[JobRecord], limits: Mapping[str, RateLimit]) -> Statement:
        """Admit or defer the claimed ``records`` (all of rate-limited tasks), best first."""
        ordered = gate_order(records)
        tasks = sorted({r.func for r in ordered})
        return Statement(self.statements["gate"], {
            "worker": worker_id, "ids": [r.id for r in ordered], "attempts": [r.attempts for r in ordered],
            "funcs": [r.func for r in ordered], "waited": [waited(r) for r in ordered], "tasks": tasks,
            "counts": [limits[t].count for t in tasks], "periods": [limits[t].period for t in tasks],
        }, _verdict)


def gate_steps(statements: RateSQL, worker_id: str, records: Sequence[JobRecord],
               limits: Mapping[str, RateLimit]) -> Steps:
    """The gate; a task gated for the first time in this database gets its row, then its
    jobs (left untouched by the first pass) go through again."""
    verdict: Verdict = yield statements.gate(worker_id, records, limits)
    if not verdict.unknown_tasks:
        return verdict
    yield statements.ensure(sorted(verdict.unknown_tasks))
    again: Verdict = yield statements.gate(
        worker_id, [r for r in records if r.func in verdict.unknown_tasks], limits)
    if again.unknown_tasks:
        raise RuntimeError(f"rate-limit rows of {sorted(again.unknown_tasks)} vanished while gating")
    waits = [w for w in (verdict.next_due, again.next_due) if w is not None]
    return Verdict(verdict.admitted | again.admitted, min(waits) if waits else None)
