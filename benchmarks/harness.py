"""What every benchmark shares: sizes, fresh databases, repeated samples, and the report
(a table of figures and ratios, plus JSON for comparing commits)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from chancy.store.pg.server import create_database, drop_database

#: A scenario measures once and returns ``{figure key: value}``.
Scenario = Callable[["Run"], Awaitable[dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``--quick`` and ``--smoke`` shrink it."""

    name: str
    repeat: int
    insert_loop: int  # single-row inserts / .delay() calls / awaited pushes
    bulk: int  # rows per multi-row INSERT, COPY and push_many
    claim_one: int  # jobs drained one at a time by the raw baseline
    drain: tuple[int, ...]  # jobs pre-enqueued per drain measurement
    process_drain: tuple[int, ...]
    latency_seconds: float  # seconds of pushing at latency_rate
    latency_rate: float  # jobs per second
    finished_rows: int  # finished rows present for the table-scale drain
    scheduled_rows: int  # future-scheduled rows present for the table-scale drain
    memory_rows: int  # scheduled rows present while the worker's memory is sampled
    memory_settle: float  # seconds an idle worker runs before its memory is sampled
    peer_drain: int  # jobs per peer drain measurement
    celery_drain: int  # queued sync tasks per Celery-shaped drain (celery_peers.py)
    scale_jobs: int = 20_000  # jobs per fleet drain (scale.py)
    scale_workers: tuple[int, ...] = (1, 2, 4, 8)  # worker processes per fleet (scale.py)


SIZES = {
    "full": Sizes("full", repeat=3, insert_loop=3_000, bulk=50_000, claim_one=5_000,
                  drain=(10_000, 100_000), process_drain=(10_000,),
                  latency_seconds=10.0, latency_rate=100.0, finished_rows=1_000_000,
                  scheduled_rows=100_000, memory_rows=1_000_000, memory_settle=5.0, peer_drain=10_000,
                  celery_drain=5_000),
    "quick": Sizes("quick", repeat=3, insert_loop=1_000, bulk=10_000, claim_one=2_000,
                   drain=(10_000,), process_drain=(2_000,),
                   latency_seconds=3.0, latency_rate=100.0, finished_rows=100_000,
                   scheduled_rows=10_000, memory_rows=100_000, memory_settle=3.0, peer_drain=5_000,
                   celery_drain=4_000, scale_jobs=10_000),
    "smoke": Sizes("smoke", repeat=1, insert_loop=50, bulk=200, claim_one=100,
                   drain=(300,), process_drain=(50,),
                   latency_seconds=0.5, latency_rate=50.0, finished_rows=1_000,
                   scheduled_rows=200, memory_rows=1_000, memory_settle=0.5, peer_drain=100,
                   celery_drain=50, scale_jobs=200, scale_workers=(1, 2)),
}


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    label: str
    unit: str
    higher_is_better: bool = True


@dataclasses.dataclass
class Figure:
    key: str
    spec: FigureSpec
    samples: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.spec.label, "unit": self.spec.unit, "median": self.median,
                "min": min(self.samples), "max": max(self.samples), "samples": self.samples}


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two figures' medians, with the target it must meet."""

    label: str
    numerator: str
    denominator: str
    at_least: float | None = None
    at_most: float | None = None

    def met(self, value: float) -> bool | None:
        if self.at_least is None and self.at_most is None:
            return None
        return (self.at_least is None or value >= self.at_least) and (self.at_most is None or value <= self.at_most)

    @property
    def target(self) -> str:
        return " ".join(([f">= {self.at_least:g}"] if self.at_least is not None else [])
                        + ([f"<= {self.at_most:g}"] if self.at_most is not None else []))


@dataclasses.dataclass(frozen=True)
class Limit:
    """An absolute target: the figure's median must be at most ``maximum``."""

    key: str
    maximum: float


class Run:
    """One benchmark run: where it connects, how big it is, and what it measured."""

    def __init__(self, admin_dsn: str, sizes: Sizes, *, log: Callable[[str], None] = print) -> None:
        self.admin_dsn = admin_dsn
        self.sizes = sizes
        self.log = log
        self.figures: dict[str, Figure] = {}
        self.ratios: list[Ratio] = []
        self.limits: list[Limit] = []
        self.notes: list[str] = []

    def fresh_database(self) -> "FreshDatabase":
        return FreshDatabase(self.admin_dsn)

    async def measure(self, specs: dict[str, FigureSpec], scenario: Scenario, repeat: int | None = None) -> None:
        """Run ``scenario`` ``repeat`` times, each on whatever fresh state it sets up."""
        for i in range(repeat or self.sizes.repeat):
            started = time.monotonic()
            values = await scenario(self)
            shown = ", ".join(f"{specs[k].label} {_fmt(v)} {specs[k].unit}" for k, v in values.items())
            self.log(f"  [{i + 1}] {shown}  ({time.monotonic() - started:.1f}s)")
            for key, value in values.items():
                self.figures.setdefault(key, Figure(key, specs[key])).samples.append(value)

    def ratio(self, label: str, numerator: str, denominator: str, *, at_least: float | None = None,
              at_most: float | None = None) -> None:
        self.ratios.append(Ratio(label, numerator, denominator, at_least, at_most))

    def limit(self, key: str, maximum: float) -> None:
        self.limits.append(Limit(key, maximum))

    # --- the report -------------------------------------------------------------------
    def ratio_rows(self) -> list[dict[str, Any]]:
        rows = []
        for ratio in self.ratios:
            num, den = self.figures.get(ratio.numerator), self.figures.get(ratio.denominator)
            if num is None or den is None:
                continue
            value = num.median / den.median if den.median else float("inf")
            rows.append({"label": ratio.label, "numerator": ratio.numerator,
                         "denominator": ratio.denominator, "value": value, "target": ratio.target,
                         "met": ratio.met(value)})
        return rows

    def limit_rows(self) -> list[dict[str, Any]]:
        return [{"key": lim.key, "label": self.figures[lim.key].spec.label,
                 "median": self.figures[lim.key].median, "maximum": lim.maximum,
                 "met": self.figures[lim.key].median <= lim.maximum}
                for lim in self.limits if lim.key in self.figures]

    def table(self) -> str:
        lines = [f"{'figure':<58} {'median':>12} {'min':>12} {'max':>12}  unit"]
        for fig in self.figures.values():
            lines.append(f"{fig.spec.label:<58} {_fmt(fig.median):>12} {_fmt(min(fig.samples)):>12} "
                         f"{_fmt(max(fig.samples)):>12}  {fig.spec.unit}  (n={len(fig.samples)})")
        lines += ["", f"{'ratio':<58} {'value':>12} {'target':>12}  verdict"]
        for row in self.ratio_rows():
            target = row["target"]
            verdict = "" if row["met"] is None else ("met" if row["met"] else "MISSED")
            lines.append(f"{row['label']:<58} {row['value']:>12.2f} {target:>12}  {verdict}")
        for row in self.limit_rows():
            lines.append(f"{row['label'] + ' (absolute)':<58} {_fmt(row['median']):>12} "
                         f"{'<= ' + _fmt(row['maximum']):>12}  {'met' if row['met'] else 'MISSED'}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def write_json(self, directory: Path, environment: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = directory / f"{stamp}-{environment.get('chancy_commit', 'unknown')[:10]}-{self.sizes.name}.json"
        path.write_text(json.dumps({
            "environment": {**environment, "load_average_at_end": os.getloadavg()}, "sizes": dataclasses.asdict(self.sizes),
            "figures": {key: fig.as_dict() for key, fig in self.figures.items()},
            "ratios": self.ratio_rows(), "limits": self.limit_rows(), "notes": self.notes,
        }, indent=2))
        return path


class FreshDatabase:
    """``async with run.fresh_database() as dsn:`` an empty database, dropped afterwards,
    so no scenario sees another's rows, dead tuples or cached plans."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"chancy_bench_{uuid.uuid4().hex[:12]}"

    async def __aenter__(self) -> str:
        return create_database(self.admin_dsn, self.name)

    async def __aexit__(self, *exc: object) -> None:
        drop_database(self.admin_dsn, self.name)


def rate(count: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"a measurement of {count} jobs took {seconds}s: the clock or the setup is wrong")
    return count / seconds


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"
